#if canImport(Glibc)
import Glibc
#endif

/// Which set-ID bits a write drops, as the kernel's
/// setattr_should_drop_suidgid decides for a local file system: a FUSE
/// file system must do it itself, since the kernel's direct-I/O write path
/// leaves it to the file system. Without this, `chmod 4777 f` and a write
/// by another user would leave a set-user-ID file that user wrote.
enum SetIDBits {
    /// The bits of `mode` a write by `caller` drops; 0 for a caller with
    /// CAP_FSETID (root, here: the request carries no capabilities) or no
    /// caller (the file system's own writes).
    static func droppedByWrite(mode: UInt32, gid: UInt32, by caller: FileSystem.Caller?) -> UInt32 {
        guard mode & (S_ISUID | S_ISGID) != 0, let caller, caller.uid != 0, mode & S_IFMT == S_IFREG else { return 0 }
        var dropped = mode & S_ISUID
        // Set-group-ID without group execute marks mandatory locking, kept
        // for a writer of the file's group: by its primary group here (a
        // request carries no supplementary groups; the kernel would also
        // keep it for those, so this drops it more often, never less).
        if mode & S_ISGID != 0, mode & S_IXGRP != 0 || caller.gid != gid { dropped |= S_ISGID }
        return dropped
    }
}

extension FileSystem {
    /// Drops `bits` from the file's mode, unless a chmod has changed them since.
    func dropSetIDBits(_ number: UInt64, _ bits: UInt32) throws {
        try tree.writing {
            guard let inode = inodes[number], inode.record.mode & bits != 0 else { return }
            _ = try setAttributesLocked(number, AttributeChange(mode: inode.record.mode & 0o7777 & ~bits))
        }
    }
}
