import Foundation
import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// A pool mounted for real (root, /dev/fuse), unmounted and waited for even
/// when the test fails.
public final class MountedPool {
    public let scratch: Scratch
    public let name: String
    public let mountpoint: String
    public let options: [String]
    public private(set) var daemon: Child

    /// `options`: poolfs mount's arguments after the mount point (-o …).
    public convenience init(name: String = "mnt", size: UInt64 = 32 << 20, pageSize: UInt64 = 4096, options: [String] = [],
                            configure: (Pool) throws -> Void = { _ in }) throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: name, size: size, pageSize: pageSize, at: scratch.path)
        try configure(pool)
        pool.close()
        try self.init(existing: name, scratch: scratch, mountpoint: "mountpoint", options: options)
    }

    /// Pool `name` of `scratch`, which exists, mounted at `scratch/mountpoint`.
    public init(existing name: String, scratch: Scratch, mountpoint: String, options: [String] = []) throws {
        self.scratch = scratch
        self.name = name
        self.options = options
        self.mountpoint = scratch.path + "/" + mountpoint
        guard mkdir(self.mountpoint, 0o755) == 0 else { throw PoolError.system(call: "mkdir", path: self.mountpoint, errno: errno) }
        daemon = try MountedPool.start(name, self.mountpoint, scratch.path, options)
    }

    private static func start(_ name: String, _ mountpoint: String, _ home: String, _ options: [String]) throws -> Child {
        let daemon = try Child(builtExecutable("poolfs"), ["mount", name, mountpoint, "-f", "--path", home] + options)
        let line = daemon.readLine() ?? "<nothing>"
        guard line.hasPrefix("mounted pool") else {
            throw PoolError.system(call: "mount: \(line)", path: mountpoint, errno: EIO)
        }
        return daemon
    }

    deinit { unmount() }

    /// Unmounts and waits for the daemon to finish.
    public func unmount() {
        _ = try? run("fusermount3", ["-u", "-z", mountpoint])
        daemon.wait()
    }

    public func remount() throws {
        unmount()
        daemon = try MountedPool.start(name, mountpoint, scratch.path, options)
    }

    /// kill -9 of the mount process, then the dead mount taken away.
    public func killDaemon() {
        daemon.kill9()
        daemon.wait()
        _ = try? run("fusermount3", ["-u", "-z", mountpoint])
    }

    public func path(_ relative: String) -> String { mountpoint + "/" + relative }

    /// `poolfs ARGUMENTS --path` this pool's home, as a user runs it.
    public func poolfs(_ arguments: String...) throws -> (status: Int32, output: String) {
        try run(builtExecutable("poolfs"), arguments + ["--path", scratch.path])
    }

    public func text(_ path: String) -> String? {
        (try? String(contentsOfFile: mountpoint + "/" + path, encoding: .utf8))
    }

    public func list(_ path: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: mountpoint + "/" + path)) ?? []).sorted()
    }
}

extension MountedPool {
    /// Whether this process may mount: FUSE mounts need root (the tests
    /// mount for real) and /dev/fuse. Mount tests are skipped, saying so,
    /// where they cannot.
    public static let available = getuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0
}
