import CFuse
import FUSETransport
import PoolCore
import PoolFS
#if canImport(Glibc)
import Glibc
#endif

/// Mounting a pool: checks first (each failure one line), then libfuse's
/// session in the order that works (NOTES.md), until unmounted or signalled.
public enum Mount {
    /// The mount option that keeps requests off io_uring (RingQueue.swift).
    public static let noIOUring = "no_io_uring"

    /// Mount options libfuse (or poolfs) refused, and why.
    public struct OptionsRefused: Error, CustomStringConvertible {
        public let options: String
        public let reason: String
        public var description: String { "invalid mount option '\(options)': \(reason)" }
    }

    /// libfuse's complaint about mount options (`fuse: unknown option(s):
    /// `-o X'`), naming the options.
    static func refusal(_ complaint: String, options: [String]) -> OptionsRefused {
        if let start = complaint.range(of: "`-o "), let end = complaint[start.upperBound...].firstIndex(of: "'") {
            return OptionsRefused(options: String(complaint[start.upperBound..<end]), reason: "neither libfuse nor poolfs knows it")
        }
        let said = complaint.split(separator: "\n").first.map { $0.replacingOccurrences(of: "fuse: ", with: "") }
        return OptionsRefused(options: options.joined(separator: ","), reason: said ?? "libfuse refused them")
    }

    /// Runs `body` with this process's stderr going into a pipe; returns
    /// what it wrote there (a pipe's 64 KiB at most: more is dropped, not
    /// waited on).
    static func capturingStandardError<T>(_ body: () -> T) -> (T, String) {
        var ends: [Int32] = [-1, -1]
        let saved = dup(2)
        guard saved >= 0, pipe(&ends) == 0 else {
            if saved >= 0 { close(saved) }
            return (body(), "")
        }
        _ = fcntl(ends[1], F_SETFL, O_NONBLOCK)
        dup2(ends[1], 2)
        close(ends[1])
        let result = body()
        dup2(saved, 2)
        close(saved)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(ends[0], &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk[0..<count]
        }
        close(ends[0])
        return (result, String(decoding: bytes, as: UTF8.self))
    }

    /// What the mount point must be: an existing directory; /dev/fuse usable.
    public static func checkMountPoint(_ path: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw PoolError.system(call: "mount", path: path, errno: errno)
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw PoolError.system(call: "mount", path: path, errno: ENOTDIR)
        }
        guard access("/dev/fuse", R_OK | W_OK) == 0 else {
            throw PoolError.system(call: "open", path: "/dev/fuse", errno: errno)
        }
    }

    /// `remote_cache=SIZE` (256M unless told) and `remote_timeout=SECONDS`
    /// (`2s`, `500ms`; 2 s unless told), taken out of the options: ours.
    static func remoteSettings(taking options: inout [String]) throws -> RemoteCacheSettings {
        var settings = RemoteCacheSettings()
        for option in options {
            if option.hasPrefix("remote_cache=") {
                let text = String(option.dropFirst("remote_cache=".count))
                guard let bytes = try? ByteSize.parse(text) else {
                    throw OptionsRefused(options: option, reason: "expected a size such as 256M or 1G")
                }
                settings.cacheBytes = bytes
            } else if option.hasPrefix("remote_timeout=") {
                let text = String(option.dropFirst("remote_timeout=".count))
                let (number, scale): (Substring, Double) = text.hasSuffix("ms") ? (text.dropLast(2), 0.001)
                    : text.hasSuffix("s") ? (text.dropLast(), 1) : (Substring(text), 1)
                guard let value = Double(number), value.isFinite, value > 0, value * scale <= 3600 else {
                    throw OptionsRefused(options: option, reason: "expected a time from 1ms to 3600s, such as 2s or 500ms")
                }
                settings.timeoutSeconds = value * scale
            }
        }
        options.removeAll { $0.hasPrefix("remote_cache=") || $0.hasPrefix("remote_timeout=") }
        return settings
    }

    /// Runs the file system on `mountpoint` until it is unmounted; calls
    /// `ready` once it is mounted (after going to the background unless
    /// `foreground`). Returns when the session ends.
    public static func run(pool: Pool, mountpoint: String, foreground: Bool, options: [String],
                           ready: () -> Void) throws {
        try checkMountPoint(mountpoint)
        var options = options
        pool.remoteCacheSettings = try remoteSettings(taking: &options)
        try pool.holdExclusively(for: "mounted")
        // Before recovery frees pages: an earlier mount's direct clients
        // are told it is gone, and have stopped copying.
        let leases = try? DirectLeases.create(in: pool.path)
        let fs = try FileSystem(pool: pool)
        fs.directLeases = leases
        let adapter = FUSEAdapter(fs: fs, tree: ControlTree(pool: pool, fileSystem: fs))
        let transport = FUSETransport(handler: adapter)
        // Ours, not libfuse's: requests through /dev/fuse only.
        let rings = !options.contains(noIOUring)
        options.removeAll { $0 == noIOUring }
        // Also the kernel's: reads leave access times alone.
        if options.contains("noatime") { fs.accessTimes.store(false, ordering: .relaxed) }
        if options.contains("nodiratime") {
            // Ours alone: libfuse does not know it.
            options.removeAll { $0 == "nodiratime" }
            adapter.noteDirectoryAccess = false
        }
        var args = fuse_args(argc: 0, argv: nil, allocated: 0)
        defer { fuse_opt_free_args(&args) }
        // Named in /proc/mounts and df as poolfs:NAME of type fuse.poolfs.
        if !options.contains(where: { $0.hasPrefix("fsname=") }) { options.append("fsname=poolfs:\(pool.name)") }
        if !options.contains(where: { $0.hasPrefix("subtype=") }) { options.append("subtype=poolfs") }
        // The kernel checks permission bits, as on tmpfs.
        if !options.contains("default_permissions") { options.append("default_permissions") }
        for argument in ["poolfs", "-o", options.joined(separator: ",")] {
            fuse_opt_add_arg(&args, argument)
        }
        var ops = FUSEAdapter.operations()
        // libfuse says what it refuses on stderr: that becomes our one line.
        let (made, complaint) = Mount.capturingStandardError {
            fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, transport.sessionUserdata)
        }
        guard let se = made else { throw Mount.refusal(complaint, options: options) }
        if !complaint.isEmpty { _ = complaint.withCString { write(2, $0, strlen($0)) } }
        defer { fuse_session_destroy(se) }
        // A daemon started with & inherits SIGINT ignored; libfuse only
        // replaces the default handler.
        signal(SIGINT, SIG_DFL)
        // Nor may they arrive blocked (a parent's mask is inherited).
        var signals = sigset_t()
        sigemptyset(&signals)
        for number in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, number) }
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)
        guard fuse_set_signal_handlers(se) == 0 else {
            throw PoolError.system(call: "sigaction", path: mountpoint, errno: errno)
        }
        defer { fuse_remove_signal_handlers(se) }
        guard fuse_session_mount(se, mountpoint) == 0 else {
            throw PoolError.system(call: "mount", path: mountpoint, errno: EIO)
        }
        adapter.session = se
        // Without it, files are written direct only by a sole write-only
        // opener, and requests come through /dev/fuse alone.
        _ = transport.install(on: se, rings: rings)
        defer { fuse_session_unmount(se) }
        fuse_daemonize(foreground ? 1 : 0)
        if !foreground { pool.didFork() }
        pool.recordExclusiveHolder()
        ready()
        let config = fuse_loop_cfg_create()
        defer { fuse_loop_cfg_destroy(config) }
        fuse_loop_cfg_set_max_threads(config, 16)
        let returner = FreeMemoryReturner.start(pool: pool)
        let invalidator = PageCacheInvalidator { inode, range in
            _ = fuse_lowlevel_notify_inval_inode(se, fuse_ino_t(inode), off_t(range.lowerBound),
                                                 off_t(range.count))
        }
        adapter.pageCacheInvalidator = invalidator
        // The transport's threads reach the adapter unowned: it lives
        // until they have stopped.
        withExtendedLifetime(adapter) {
            _ = fuse_session_loop_mt(se, config)
            returner.stop()
            transport.stop()
            invalidator.stop()
        }
        fs.unmount()
        leases?.retire()
    }
}
