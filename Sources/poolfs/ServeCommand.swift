import ArgumentParser
import PoolCore
import PoolNet
#if canImport(Glibc)
import Glibc
#endif

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a pool to other machines as a memory node, over UCX.",
        discussion: """
            Clients (RemotePool, `poolfs remote`) that hold the key in --key-file allocate and free \
            page runs and open regions of pool NAME, and read, write and CAS its bytes, which travel \
            over RDMA where UCX finds a fabric, TCP or shared memory elsewhere (UCX_TLS chooses). \
            The pool stays usable by local programs and a mount meanwhile. Goes to the background \
            once listening unless -f; SIGTERM or Ctrl-C (with -f) stops it. Logs to the system log \
            in the background.
            """)

    @OptionGroup var pool: PoolLocation
    @Option(help: ArgumentHelp("Where to listen, e.g. 10.0.0.1:7420 or [::1]:7420.", valueName: "ADDR:PORT"))
    var listen: String
    @Option(name: .customLong("key-file"), help: "The pool's key (`poolfs key create FILE`).")
    var keyFile: String
    @Flag(name: .customShort("f"), help: "Stay in the foreground.") var foreground = false

    func run() throws {
        try reportingErrors {
            let key = try NodeKey.load(from: keyFile)
            let address = try NodeAddress(listen)
            // Blocked before UCX starts its threads, so that they wait for
            // the serving loop to take them.
            var stopSignals = sigset_t()
            sigemptyset(&stopSignals)
            sigaddset(&stopSignals, SIGTERM)
            sigaddset(&stopSignals, SIGINT)
            pthread_sigmask(SIG_BLOCK, &stopSignals, nil)
            let background = foreground ? nil : try Detached.start()
            let opened = try Pool.open(name: pool.name, at: pool.path)
            defer { opened.close() }
            let name = pool.name
            let log: (String) -> Void = foreground
                ? { FileOutput.standardError.write("poolfs: \($0)\n") }
                : { SystemLog.write(.notice, pool: name, $0) }
            let node = try MemoryNode(pool: opened, listeningOn: address, key: key, log: log)
            let devices = node.rdmaDevices
            let announcement = """
                serving pool '\(name)' at \(node.address)
                transports: \(node.transports.joined(separator: ", "))
                RDMA devices: \(devices.isEmpty ? "none: using tcp" : devices.joined(separator: ", "))
                pid: \(getpid())

                """
            if let background { background.ready(announcement) } else { FileOutput(descriptor: 1).write(announcement) }
            // Asked at least every 100 ms while idle: a stop takes no longer.
            var zero = timespec()
            var signal: Int32 = 0
            try node.serve {
                signal = sigtimedwait(&stopSignals, nil, &zero)
                return signal > 0
            }
            log("stopped by \(signal == SIGTERM ? "SIGTERM" : "SIGINT")")
        }
    }
}
