import PoolCore
import Testing
import TestSupport
@testable import PoolNet
#if canImport(Glibc)
import Glibc
#endif

/// `poolfs serve`, `poolfs key` and `poolfs remote` as a user runs them.
@Suite(.serialized) struct NodeCommandTests {
    let poolfs = builtExecutable("poolfs")

    func remote(_ served: ServedPool, _ arguments: [String], keyFile: String? = nil) throws -> (status: Int32, output: String) {
        try run(poolfs, ["remote", arguments[0], served.address, "--key-file", keyFile ?? served.keyFile]
                    + arguments.dropFirst(), environment: ServedPool.environment)
    }

    @Test func theRemoteCommandDrivesANode() throws {
        let served = try ServedPool()
        let alloc = try remote(served, ["alloc", "--count", "2"])
        #expect(alloc.status == 0, "\(alloc.output)")
        let address = alloc.output
        #expect(GlobalAddress(address) != nil, "\(address)")
        #expect(try remote(served, ["write", address, "--text", "hello node"]).status == 0)
        let read = try remote(served, ["read", address, "--count", "10"])
        #expect(read.output == "hello node")
        let word = GlobalAddress(address)!.advanced(by: 16).description
        #expect(try remote(served, ["cas", word, "0", "5"]).output == "swapped 0")
        #expect(try remote(served, ["cas", word, "0", "6"]).output == "kept 5")
        #expect(try remote(served, ["add", word, "2"]).output == "5")
        let region = try remote(served, ["region", "table", "--size", "64K"])
        #expect(region.status == 0 && region.output.hasSuffix(" 65536"), "\(region.output)")
        #expect(try remote(served, ["region", "table"]).output == region.output)
        let info = try remote(served, ["info"])
        #expect(info.output.contains("pool 'served'") && info.output.contains("page size: 4K"), "\(info.output)")
        #expect(try remote(served, ["free", address, "--count", "2"]).status == 0)
        let again = try remote(served, ["free", address, "--count", "2"])
        #expect(again.status == 1)
        #expect(again.output.hasPrefix("poolfs: memory node \(served.address): ") && !again.output.contains("\n"),
                "\(again.output)")
    }

    @Test func refusalsAndAnAbsentNodeAreOneLine() throws {
        let served = try ServedPool()
        let other = served.scratch.path + "/other"
        #expect(try run(poolfs, ["key", "create", other]).status == 0)
        let wrong = try remote(served, ["info"], keyFile: other)
        #expect(wrong.status == 1)
        #expect(wrong.output == "poolfs: memory node \(served.address) refused the connection: wrong key (the node holds another)")
        let missing = try remote(served, ["info"], keyFile: served.scratch.path + "/none")
        #expect(missing.status == 1 && missing.output.contains("key file") && missing.output.contains("No such file"))

        // Nothing listens on the port once the node is gone.
        served.node!.kill9()
        served.node!.wait()
        let absent = try run(poolfs, ["remote", "info", served.address, "--key-file", served.keyFile, "--deadline", "1"],
                             environment: ServedPool.environment)
        #expect(absent.status == 1)
        #expect(absent.output.hasPrefix("poolfs: memory node \(served.address)") && !absent.output.contains("\n"),
                "\(absent.output)")
        let garbled = try run(poolfs, ["remote", "info", "no-port", "--key-file", served.keyFile])
        #expect(garbled.output == "poolfs: 'no-port' is not a node address: expected HOST:PORT")
    }

    @Test func serveGoesToTheBackgroundAndStopsOnSIGTERM() throws {
        let scratch = Scratch()
        let key = scratch.path + "/key"
        #expect(try run(poolfs, ["create", "bg", "--size", "16M", "--path", scratch.path]).status == 0)
        #expect(try run(poolfs, ["key", "create", key]).status == 0)
        let started = try run(poolfs, ["serve", "bg", "--path", scratch.path, "--listen", "127.0.0.1:0", "--key-file", key],
                              environment: ServedPool.environment)
        #expect(started.status == 0, "\(started.output)")
        let lines = started.output.split(separator: "\n")
        guard let pidLine = lines.last, pidLine.hasPrefix("pid: "), let pid = Int32(pidLine.dropFirst(5)),
              let address = lines.first?.split(separator: " ").last
        else { Issue.record("\(started.output)"); return }
        defer { kill(pid, SIGKILL) }
        #expect(getsid(pid) == pid, "the node leads a session of its own")

        // A second node on the same port fails before going to the background.
        let second = try run(poolfs, ["serve", "bg", "--path", scratch.path, "--listen", String(address), "--key-file", key],
                             environment: ServedPool.environment)
        #expect(second.status == 1)
        #expect(second.output.split(separator: "\n").last?.hasPrefix("poolfs: UCX listen failed: \(address) is in use") == true,
                "\(second.output)")

        setenv("UCX_TLS", "tcp", 1)
        let pool = try RemotePool.connect(to: String(address), key: NodeKey.load(from: key))
        #expect(try pool.allocatePages(count: 1) != .null)
        pool.close()
        kill(pid, SIGTERM)
        var gone = false
        for _ in 0..<250 where !gone {
            gone = kill(pid, 0) != 0
            if !gone { usleep(20_000) }
        }
        #expect(gone, "the node did not stop on SIGTERM")
        let check = try run(poolfs, ["check", "bg", "--path", scratch.path])
        #expect(check.status == 0, "\(check.output)")
    }

    /// A client killed in the middle of its storm leaves the node serving
    /// and the pool consistent: the node stops on SIGTERM and check is clean.
    @Test func aClientKilledMidStormLeavesTheNodeConsistent() throws {
        let served = try ServedPool()
        let counter: GlobalAddress = try {
            let local = try Pool.open(name: served.name, at: served.home)
            defer { local.close() }
            return try local.createRegion(name: "counter", size: 16).address
        }()
        let storm = try Child(builtExecutable("PoolTestHelper"),
                              ["remote-storm", served.address, served.keyFile, "\(counter)", "100000", "0"],
                              environment: ServedPool.environment)
        var runs = 0
        while let line = storm.readLine(), line.hasPrefix("run ") {
            runs += 1
            if runs == 200 { storm.kill9() }
        }
        storm.wait()
        let remote = try connect(served)
        #expect(try remote.fetchAndAdd(at: counter, 0) >= 200)
        remote.close()
        kill(served.node!.pid, SIGTERM)
        #expect(served.node!.waitFor("poolfs: stopped by SIGTERM").last == "poolfs: stopped by SIGTERM")
        #expect(served.node!.wait() == 0)
        let check = try run(poolfs, ["check", served.name, "--path", served.home])
        #expect(check.status == 0, "\(check.output)")
    }
}
