import ArgumentParser
import PoolCore
import PoolFS
import PoolFUSE
#if canImport(Glibc)
import Glibc
#endif

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount a pool: a file system whose files are pool pages, with the pool under MOUNTPOINT/.pool/.",
        discussion: """
            Files and directories written under MOUNTPOINT live in the pool's pages, their \
            metadata in the pool too: what was written and closed survives an unmount and a \
            kill -9 of this process. MOUNTPOINT/.pool/ shows the pool's info, heaps, regions \
            and shelves as files. Goes to the background once mounted unless -f. Ctrl-C (with \
            -f), SIGTERM, `umount` or `fusermount3 -u MOUNTPOINT` unmount it. One mount per \
            pool at a time.
            """)

    @OptionGroup var pool: PoolLocation
    @Argument(help: "An existing directory (it may hold files; they are hidden while mounted).")
    var mountpoint: String
    @Flag(name: .customShort("f"), help: "Stay in the foreground.") var foreground = false
    @Option(name: .customShort("o"),
            help: "Mount options, comma-separated: libfuse's (allow_other, noatime, …), nodiratime, no_io_uring to serve requests through /dev/fuse alone, and for remote shelves remote_cache=SIZE (256M) and remote_timeout=TIME (2s).")
    var options: String?

    func run() throws {
        try reportingErrors {
            do {
                try FileSystem.checkBeforeMount(name: pool.name, at: pool.path)
            } catch {
                // A mount started at boot has no one to read its terminal.
                SystemLog.write(.error, pool: pool.name, "mount refused: \(error)")
                throw error
            }
        }
        try pool.withPool { opened in
            try Mount.run(pool: opened, mountpoint: mountpoint, foreground: foreground,
                          options: options.map { $0.split(separator: ",").map(String.init) } ?? []) {
                // One line, unbuffered: scripts and tests wait for it.
                if foreground { FileOutput(descriptor: 1).write("mounted pool '\(pool.name)' at \(mountpoint)\n") }
            }
        }
    }
}
