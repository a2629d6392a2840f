import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Names: create, link, unlink, rename, setattr. Each checks everything
/// first, then commits one record. Permission bits are the kernel's to
/// check (the mount uses default_permissions).
extension FileSystem {
    static func checkName(_ name: FileName) throws {
        guard !name.isEmpty, name != ".", name != "..", !name.bytes.contains(UInt8(ascii: "/")) else {
            throw FileSystemError.invalid
        }
        try checkLength(name)
    }

    /// Every call that takes a name refuses one over 255 bytes, as tmpfs
    /// does: a lookup too, not only a create.
    public static func checkLength(_ name: FileName) throws {
        guard name.count <= maximumNameLength else { throw FileSystemError.nameTooLong }
    }

    /// Makes a file, directory, device node or symlink (`target`).
    public func create(parent: UInt64, name: FileName, mode: UInt32, rdev: UInt64 = 0, target: [UInt8] = [],
                       caller: Caller) throws -> stat {
        try createAndOpen(parent: parent, name: name, mode: mode, rdev: rdev, target: target, caller: caller,
                          opening: false)
    }

    /// create, and with `opening` the open of the new file counted in the
    /// same step, so that no unlink comes between.
    public func createAndOpen(parent: UInt64, name: FileName, mode: UInt32, rdev: UInt64 = 0, target: [UInt8] = [],
                              caller: Caller, opening: Bool) throws -> stat {
        try FileSystem.checkName(name)
        return try tree.writing {
            let directory = try directory(parent)
            guard directory.record.nlink > 0 else { throw FileSystemError.notFound }
            guard directory.directory!.inode(named: name) == nil else { throw FileSystemError.exists }
            let now = Timestamp.now()
            var mode = mode
            var gid = caller.gid
            // BSD group semantics under a setgid directory, as ext4 and tmpfs.
            if directory.record.mode & S_ISGID != 0 {
                gid = directory.record.gid
                if mode & S_IFMT == S_IFDIR { mode |= S_ISGID }
            }
            let heap = self.heap(directory.record.heap).id
            let record = InodeRecord(
                number: nextInode, mode: mode, uid: caller.uid, gid: gid, nlink: mode & S_IFMT == S_IFDIR ? 2 : 1,
                rdev: rdev, size: mode & S_IFMT == S_IFLNK ? UInt64(target.count) : 0,
                atime: now, mtime: now, ctime: now, heap: heap,
                parent: mode & S_IFMT == S_IFDIR ? parent : 0, target: target)
            // A new directory inherits its parent's heap for its files.
            try commit(.create(parent: parent, name: name, record))
            compactIfLarge()
            let inode = try inode(record.number)
            if opening { _ = countOpen(inode) }
            return attributes(inode)
        }
    }

    public func link(_ number: UInt64, parent: UInt64, name: FileName) throws -> stat {
        try FileSystem.checkName(name)
        return try tree.writing {
            let directory = try directory(parent)
            let inode = try inode(number)
            guard !inode.isDirectory else { throw FileSystemError.notPermitted }
            guard inode.record.nlink > 0 else { throw FileSystemError.notFound }
            guard inode.record.nlink < UInt32(Int32.max) else { throw FileSystemError.tooManyLinks }
            guard directory.directory!.inode(named: name) == nil else { throw FileSystemError.exists }
            try commit(.link(parent: parent, name: name, inode: number, time: .now()))
            return attributes(inode)
        }
    }

    /// unlink (`directory` false) or rmdir (true).
    public func remove(parent: UInt64, name: FileName, directory wantDirectory: Bool) throws {
        try FileSystem.checkLength(name)
        try tree.writing {
            let directory = try directory(parent)
            guard let number = directory.directory!.inode(named: name) else { throw FileSystemError.notFound }
            let inode = try inode(number)
            if wantDirectory {
                guard inode.isDirectory else { throw FileSystemError.notDirectory }
                guard inode.directory!.isEmpty else { throw FileSystemError.notEmpty }
            } else if inode.isDirectory {
                throw FileSystemError.isDirectory
            }
            try commit(.unlink(parent: parent, name: name, time: .now()))
            compactIfLarge()
        }
    }

    /// rename(2) with RENAME_NOREPLACE, RENAME_EXCHANGE and RENAME_WHITEOUT
    /// (`whiteout`: who asks; a whiteout, the character device 0:0 that
    /// overlayfs reads as "deleted", takes the old name in the same record).
    public func rename(from: UInt64, name: FileName, to: UInt64, newName: FileName,
                       noReplace: Bool, exchange: Bool, whiteout: Caller? = nil) throws {
        try FileSystem.checkLength(name)
        try FileSystem.checkName(newName)
        guard !(noReplace && exchange), !(exchange && whiteout != nil) else { throw FileSystemError.invalid }
        try tree.writing {
            let source = try directory(from)
            let target = try directory(to)
            guard let moving = source.directory!.inode(named: name) else { throw FileSystemError.notFound }
            if FileSystem.isFrozen(from), !FileSystem.isFrozen(to), !exchange, whiteout == nil {
                return try bringBack(try inode(moving), to: target, newName: newName, noReplace: noReplace)
            }
            let existing = target.directory!.inode(named: newName)
            if existing == moving { return }
            let movingInode = try inode(moving)
            if exchange {
                guard let existing else { throw FileSystemError.notFound }
                let other = try inode(existing)
                if other.isDirectory { try refuseLoop(moving: existing, into: from) }
            } else if let existing {
                guard !noReplace else { throw FileSystemError.exists }
                let replaced = try inode(existing)
                if movingInode.isDirectory {
                    guard replaced.isDirectory else { throw FileSystemError.notDirectory }
                    guard replaced.directory!.isEmpty else { throw FileSystemError.notEmpty }
                } else if replaced.isDirectory {
                    throw FileSystemError.isDirectory
                }
            }
            if movingInode.isDirectory { try refuseLoop(moving: moving, into: to) }
            let now = Timestamp.now()
            let whiteout = whiteout.map {
                InodeRecord(number: nextInode, mode: S_IFCHR, uid: $0.uid, gid: $0.gid, nlink: 1, rdev: 0, size: 0,
                            atime: now, mtime: now, ctime: now, heap: source.record.heap, parent: 0, target: [])
            }
            try commit(.rename(from: from, name: name, to: to, newName: newName, exchange: exchange, time: now,
                               whiteout: whiteout))
        }
    }

    /// A directory cannot move under itself.
    private func refuseLoop(moving: UInt64, into directory: UInt64) throws {
        var current = directory
        while true {
            if current == moving { throw FileSystemError.invalid }
            if current == FileSystem.rootInode { return }
            guard let parent = inodes[current]?.record.parent, parent != 0 else { return }
            current = parent
        }
    }

    /// chmod, chown, truncate, utimensat: nil leaves a field as it is.
    public func setAttributes(_ number: UInt64, _ change: AttributeChange) throws -> stat {
        try tree.writing { try setAttributesLocked(number, change) }
    }

    /// `tree` held for writing.
    func setAttributesLocked(_ number: UInt64, _ change: AttributeChange) throws -> stat {
        if FileSystem.isFrozen(number) { throw FileSystemError.readOnly }
        do {
            let inode = try inode(number)
            if let size = change.size {
                guard !inode.isDirectory else { throw FileSystemError.isDirectory }
                guard inode.isRegular else { throw FileSystemError.invalid }
                guard size <= FileSystem.maximumFileSize else { throw FileSystemError.tooBig }
            }
            // Sizes and times writes left unlogged go first; a truncate to
            // zero carries the mtime in its own record instead, so that on a
            // full pool it needs only the reserve for removals.
            var change = change
            let folded = inode.dirty && change.size == 0
            if folded {
                change.mtime = change.mtime ?? inode.record.mtime
            } else if inode.dirty {
                try logWritten(inode)
            }
            let oldSize = inode.record.size
            if let size = change.size, size > oldSize {
                try makeRoom(in: inode, upTo: size)
                try zeroGrowing(inode, from: oldSize, to: size)
            }
            try commit(.setAttributes(inode: number, change))
            if folded { inode.dirty = false }
            if let size = change.size, size < oldSize {
                zeroBeyondSize(inode)
                // The cut is done; a full pool only leaves the bytes where they are.
                try? shrinkToFit(inode)
            }
            return attributes(inode)
        }
    }
}
