#if canImport(Glibc)
import Glibc
#endif

/// A directory the pool's files live in, held open from the moment it was
/// checked (PoolHome): every file in it is reached through this descriptor
/// (openat, renameat, unlinkat), never by its path again, so a directory
/// swapped in at that path after the check is never used.
final class PoolDirectory: @unchecked Sendable {
    let descriptor: Int32
    /// For messages only.
    let path: String

    private init(descriptor: Int32, path: String) {
        self.descriptor = descriptor
        self.path = path
    }

    deinit { SystemCall.close(descriptor) }

    /// Opens `path` (no symbolic link as its last part) and checks, on what
    /// was opened, that it is a directory owned by the user or root that no
    /// one else may write into (PoolHome.check). nil if it does not exist.
    static func open(_ path: String) throws -> PoolDirectory? {
        try opened(path) { Glibc.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
    }

    /// The directory `name` inside this one, as `open`.
    func directory(_ name: String) throws -> PoolDirectory? {
        try PoolDirectory.opened(path(of: name)) { openat(descriptor, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
    }

    private static func opened(_ path: String, _ open: () -> Int32) throws -> PoolDirectory? {
        var fd: Int32
        repeat { fd = open() } while fd < 0 && errno == EINTR
        guard fd >= 0 else {
            switch errno {
            case ENOENT: return nil
            case ELOOP, ENOTDIR:
                // Which of the two, for the message only: nothing is opened by this path.
                var info = stat()
                let link = lstat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFLNK
                throw PoolError.refusedDirectory(path: path, reason: link ? "it is a symbolic link" : "it is not a directory")
            default: throw PoolError.system(call: "open", path: path, errno: errno)
            }
        }
        let directory = PoolDirectory(descriptor: fd, path: path)
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw PoolError.system(call: "fstat", path: path, errno: errno) }
        try PoolHome.check(info, path)
        return directory
    }

    func path(of name: String) -> String { "\(path)/\(name)" }

    func open(_ name: String, flags: Int32, mode: mode_t = 0o600) throws -> Int32 {
        try SystemCall.retrying("open", path(of: name)) { openat(descriptor, name, flags | O_NOFOLLOW | O_CLOEXEC, mode) }
    }

    /// Writes a small file whole and durably: under a temporary name,
    /// synced, then renamed over `name`.
    func writeText(_ text: String, to name: String) throws {
        let staging = name + ".tmp"
        let fd = try open(staging, flags: O_WRONLY | O_CREAT | O_TRUNC)
        defer { SystemCall.close(fd) }
        var bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw PoolError.system(call: "write", path: path(of: staging), errno: errno) }
            done += n
        }
        guard fsync(fd) == 0 else { throw PoolError.system(call: "fsync", path: path(of: staging), errno: errno) }
        try rename(staging, to: name)
    }

    func exists(_ name: String) -> Bool {
        var info = stat()
        return fstatat(descriptor, name, &info, AT_SYMLINK_NOFOLLOW) == 0
    }

    func makeDirectory(_ name: String) throws {
        _ = try SystemCall.retrying("mkdir", path(of: name)) { mkdirat(descriptor, name, 0o755) }
    }

    func remove(_ name: String) {
        _ = unlinkat(descriptor, name, 0)
    }

    func removeDirectory(_ name: String) throws {
        _ = try SystemCall.retrying("rmdir", path(of: name)) { unlinkat(descriptor, name, AT_REMOVEDIR) }
    }

    /// Renames `name` to `newName`, in this directory or into `target`.
    func rename(_ name: String, to newName: String, in target: PoolDirectory? = nil) throws {
        _ = try SystemCall.retrying("rename", path(of: name)) {
            renameat(descriptor, name, (target ?? self).descriptor, newName)
        }
    }

    /// The names in the directory, but `.` and `..`.
    func list() -> [String] {
        let copy = dup(descriptor)
        guard copy >= 0, let stream = fdopendir(copy) else {
            if copy >= 0 { SystemCall.close(copy) }
            return []
        }
        defer { closedir(stream) }
        // The copy shares the read position with `descriptor`.
        rewinddir(stream)
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Free bytes of the file system the directory is on.
    var availableBytes: UInt64? {
        var info = statvfs()
        guard fstatvfs(descriptor, &info) == 0 else { return nil }
        return UInt64(info.f_bavail) * UInt64(info.f_frsize)
    }
}
