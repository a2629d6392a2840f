#if canImport(Glibc)
import Glibc
#endif

/// The directories a pool lives in, checked before use: a user who could
/// write there could swap a pool for one of their own (made first at
/// /dev/shm/poolfs, or put in place of NAME), and every process that opens
/// the pool would then trust its contents. Each is checked on the
/// descriptor it is then used through (PoolDirectory).
enum PoolHome {
    /// `home` (or the default, made if missing), opened and checked; nil
    /// where the default home does not exist and is not to be made.
    static func open(_ home: String?, creating: Bool) throws -> PoolDirectory? {
        let path = home ?? Pool.defaultHome
        if let directory = try PoolDirectory.open(path) { return directory }
        if home != nil {
            throw PoolError.refusedDirectory(path: path, reason: "it does not exist (--path takes an existing directory)")
        }
        guard creating else { return nil }
        try SystemCall.makeDirectories(path)
        guard let directory = try PoolDirectory.open(path) else {
            throw PoolError.system(call: "mkdir", path: path, errno: ENOENT)
        }
        return directory
    }

    /// The directory of pool `name` under `home`, opened and checked; nil
    /// if there is none.
    static func poolDirectory(_ name: String, _ home: String?) throws -> PoolDirectory? {
        try open(home, creating: false)?.directory(name)
    }

    /// A directory owned by the user or root, that no one else can write
    /// into (or, sticky like /tmp, where no one else can rename or remove
    /// what is ours).
    static func check(_ info: stat, _ path: String) throws {
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw PoolError.refusedDirectory(path: path, reason: "it is not a directory")
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
