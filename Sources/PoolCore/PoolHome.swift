#if canImport(Glibc)
import Glibc
#endif

/// The directories a pool lives in, checked before use: a user who could
/// write there could swap a pool for one of their own (made first at
/// /dev/shm/poolfs, or put in place of NAME), and every process that opens
/// the pool would then trust its contents.
enum PoolHome {
    /// `home` (or the default, made if missing), checked.
    static func checked(_ home: String?, creating: Bool) throws -> String {
        let path = home ?? Pool.defaultHome
        var info = stat()
        if lstat(path, &info) != 0 {
            let missing = errno == ENOENT
            if missing, home != nil {
                throw PoolError.refusedDirectory(path: path, reason: "it does not exist (--path takes an existing directory)")
            }
            // Without the default home, no pool is there: the open says so by name.
            guard missing, creating else { return path }
            try SystemCall.makeDirectories(path)
        }
        try check(path)
        return path
    }

    /// The directory of pool `name` under `home`, checked where it exists.
    static func poolDirectory(_ name: String, _ home: String?) throws -> String {
        let directory = "\(try checked(home, creating: false))/\(name)"
        var info = stat()
        if lstat(directory, &info) == 0 { try check(directory) }
        return directory
    }

    /// A directory owned by the user or root, that no one else can write
    /// into (or, sticky like /tmp, where no one else can rename or remove
    /// what is ours), and not a symbolic link.
    static func check(_ path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { throw PoolError.system(call: "lstat", path: path, errno: errno) }
        switch info.st_mode & S_IFMT {
        case S_IFDIR: break
        case S_IFLNK: throw PoolError.refusedDirectory(path: path, reason: "it is a symbolic link")
        default: throw PoolError.refusedDirectory(path: path, reason: "it is not a directory")
        }
        let me = getuid()
        guard info.st_uid == me || info.st_uid == 0 else {
            throw PoolError.refusedDirectory(path: path, reason: "it is owned by uid \(info.st_uid), not by you (uid \(me)) or root")
        }
        guard info.st_mode & (S_IWGRP | S_IWOTH) == 0 || info.st_mode & S_ISVTX != 0 else {
            throw PoolError.refusedDirectory(
                path: path, reason: "others may write into it (mode \(String(info.st_mode & 0o7777, radix: 8)), "
                    + "owner uid \(info.st_uid)); chmod go-w it")
        }
    }
}
