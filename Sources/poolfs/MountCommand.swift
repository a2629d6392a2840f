import ArgumentParser
import PoolCore
import PoolFUSE
#if canImport(Glibc)
import Glibc
#endif

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount a pool: MOUNTPOINT/.pool/ shows its info, heaps, regions and shelves as files.",
        discussion: """
            Goes to the background once mounted unless -f. Ctrl-C (with -f), SIGTERM, `umount`
            or `fusermount3 -u MOUNTPOINT` unmount it. One mount per pool at a time. This first
            version shows the pool's control tree (heaps made and placed, regions written); file
            storage comes next.
            """)

    @Argument(help: "The pool's name.") var name: String
    @Argument(help: "An existing directory (it may hold files; they are hidden while mounted).")
    var mountpoint: String
    @Option(name: .long, help: "Keep the pool at DIR/NAME instead of \(Pool.defaultHome)/NAME.") var path: String?
    @Flag(name: .customShort("f"), help: "Stay in the foreground.") var foreground = false
    @Option(name: .customShort("o"), help: "Mount options for libfuse (allow_other, …), comma-separated.")
    var options: String?

    func run() throws {
        try reportingErrors {
            try Mount.checkMountPoint(mountpoint)
            let pool = try Pool.open(name: name, at: path)
            defer { pool.close() }
            try Mount.run(pool: pool, mountpoint: mountpoint, foreground: foreground,
                          options: options.map { $0.split(separator: ",").map(String.init) } ?? []) {
                // One line, unbuffered: scripts and tests wait for it.
                if foreground { FileOutput(descriptor: 1).write("mounted pool '\(name)' at \(mountpoint)\n") }
            }
        }
    }
}
