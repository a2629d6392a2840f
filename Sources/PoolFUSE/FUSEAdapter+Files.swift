import CFuse
import PoolCore
import PoolFS
#if canImport(Glibc)
import Glibc
#endif

/// Handlers for the file system's inodes (and the dispatch to `.pool/`):
/// request in, one PoolFS call, one reply out.
extension FUSEAdapter {
    func lookup(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        FUSEAdapter.replying(req) {
            let name = try FUSEAdapter.name(name)
            if let parent = FUSEAdapter.control(parent) { return controlLookup(req, parent, try FUSEAdapter.controlName(name)) }
            if FUSEAdapter.isControlName(parent, name) { return replyEntry(req, controlDirectory, timeout: 0) }
            do {
                // A snapshot's entries are asked for again at each use: one
                // renamed out of it (FileSystem+Snapshots.swift) leaves the
                // kernel's entry on the frozen file, at the new name.
                replyEntry(req, try fs.lookup(parent: parent, name: name),
                           timeout: FileSystem.isFrozen(parent) ? 0 : FUSEAdapter.cacheSeconds)
            } catch let error as FileSystemError where error == .notFound {
                // Names appear only through this mount: the kernel may remember absences.
                var entry = fuse_entry_param()
                entry.entry_timeout = FUSEAdapter.cacheSeconds
                fuse_reply_entry(req, &entry)
            }
        }
    }

    func getattr(_ req: fuse_req_t?, _ inode: fuse_ino_t) {
        if let inode = FUSEAdapter.control(inode) { return controlGetattr(req, inode) }
        FUSEAdapter.replying(req) {
            var st = try fs.attributes(of: inode)
            fuse_reply_attr(req, &st, FUSEAdapter.cacheSeconds)
        }
    }

    func setattr(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ attributes: UnsafeMutablePointer<stat>?, _ fields: Int32) {
        if let inode = FUSEAdapter.control(inode) { return controlSetattr(req, inode, attributes?.pointee ?? stat(), fields) }
        FUSEAdapter.replying(req) {
            guard let new = attributes?.pointee else { throw FileSystemError.invalid }
            let now = Timestamp.now()
            var change = AttributeChange(ctime: now)
            if fields & FUSE_SET_ATTR_MODE != 0 { change.mode = new.st_mode }
            if fields & FUSE_SET_ATTR_UID != 0 { change.uid = new.st_uid }
            if fields & FUSE_SET_ATTR_GID != 0 { change.gid = new.st_gid }
            if fields & FUSE_SET_ATTR_SIZE != 0 {
                guard new.st_size >= 0 else { throw FileSystemError.invalid }
                change.size = UInt64(new.st_size)
            }
            if fields & FUSE_SET_ATTR_ATIME_NOW != 0 { change.atime = now } else if fields & FUSE_SET_ATTR_ATIME != 0 {
                change.atime = Timestamp(new.st_atim)
            }
            if fields & FUSE_SET_ATTR_MTIME_NOW != 0 { change.mtime = now } else if fields & FUSE_SET_ATTR_MTIME != 0 {
                change.mtime = Timestamp(new.st_mtim)
            }
            if fields & FUSE_SET_ATTR_CTIME != 0 { change.ctime = Timestamp(new.st_ctim) }
            var st = try fs.setAttributes(inode, change)
            fuse_reply_attr(req, &st, FUSEAdapter.cacheSeconds)
        }
    }

    func readlink(_ req: fuse_req_t?, _ inode: fuse_ino_t) {
        FUSEAdapter.replying(req) {
            guard FUSEAdapter.control(inode) == nil else { throw FileSystemError.invalid }
            _ = FileName(try fs.readLink(inode)).withCString { fuse_reply_readlink(req, $0) }
        }
    }

    func make(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t, _ rdev: UInt64) {
        FUSEAdapter.replying(req) {
            let name = try FUSEAdapter.name(name)
            if let parent = FUSEAdapter.control(parent) {
                if parent == ControlTree.snapshots, mode & S_IFMT == S_IFDIR {
                    return replyEntry(req, try fs.makeSnapshot(named: name))
                }
                if mode & S_IFMT == S_IFREG {
                    return replyEntry(req, controlAttributes(try tree.createRegionFile(parent: parent, name: FUSEAdapter.controlName(name),
                                                                                     access: FUSEAdapter.creatorsRegion(req))), timeout: 0)
                }
                guard mode & S_IFMT == S_IFDIR else { throw ControlTree.Refusal.notPermitted }
                return replyEntry(req, controlAttributes(try tree.makeDirectory(parent: parent, name: FUSEAdapter.controlName(name))), timeout: 0)
            }
            try FUSEAdapter.refuseControlName(parent, name)
            replyEntry(req, try fs.create(parent: parent, name: name, mode: mode, rdev: rdev, caller: FUSEAdapter.caller(req)))
        }
    }

    func symlink(_ req: fuse_req_t?, _ target: UnsafePointer<CChar>?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        FUSEAdapter.replying(req) {
            guard FUSEAdapter.control(parent) == nil else { throw FileSystemError.notPermitted }
            let name = try FUSEAdapter.name(name)
            try FUSEAdapter.refuseControlName(parent, name)
            replyEntry(req, try fs.create(parent: parent, name: name, mode: S_IFLNK | 0o777,
                                          target: try FUSEAdapter.name(target).bytes, caller: FUSEAdapter.caller(req)))
        }
    }

    func remove(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, directory: Bool) {
        FUSEAdapter.replying(req) {
            let name = try FUSEAdapter.name(name)
            if let parent = FUSEAdapter.control(parent) {
                if parent == ControlTree.snapshots, directory {
                    try fs.removeSnapshot(named: name)
                    fuse_reply_err(req, 0)
                    return
                }
                let name = try FUSEAdapter.controlName(name)
                if directory { try tree.removeDirectory(parent: parent, name: name) } else { try tree.remove(parent: parent, name: name) }
            } else {
                if FUSEAdapter.isControlName(parent, name) { throw FileSystemError(EBUSY) }
                try fs.remove(parent: parent, name: name, directory: directory)
            }
            fuse_reply_err(req, 0)
        }
    }

    func rename(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?,
                _ newParent: fuse_ino_t, _ newName: UnsafePointer<CChar>?, _ flags: UInt32) {
        FUSEAdapter.replying(req) {
            guard FUSEAdapter.control(parent) == nil, FUSEAdapter.control(newParent) == nil else {
                throw FileSystemError(EXDEV)
            }
            let name = try FUSEAdapter.name(name), newName = try FUSEAdapter.name(newName)
            // linux/fs.h: RENAME_NOREPLACE 1, RENAME_EXCHANGE 2, RENAME_WHITEOUT 4.
            guard flags & ~7 == 0 else { throw FileSystemError.invalid }
            if FUSEAdapter.isControlName(parent, name) || FUSEAdapter.isControlName(newParent, newName) {
                throw FileSystemError(EBUSY)
            }
            try fs.rename(from: parent, name: name, to: newParent, newName: newName,
                          noReplace: flags & 1 != 0, exchange: flags & 2 != 0,
                          whiteout: flags & 4 != 0 ? FUSEAdapter.caller(req) : nil)
            fuse_reply_err(req, 0)
        }
    }

    func link(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        FUSEAdapter.replying(req) {
            guard FUSEAdapter.control(inode) == nil, FUSEAdapter.control(parent) == nil else { throw FileSystemError(EXDEV) }
            let name = try FUSEAdapter.name(name)
            try FUSEAdapter.refuseControlName(parent, name)
            replyEntry(req, try fs.link(inode, parent: parent, name: name))
        }
    }

    // MARK: Open files

    /// A file handle is 1 for a direct open, 0 for a cached one.
    private func prepare(_ info: UnsafeMutablePointer<fuse_file_info>, _ policy: CachePolicy.Open) {
        info.pointee.direct_io = policy.direct ? 1 : 0
        info.pointee.keep_cache = policy.keepCache ? 1 : 0
        // Sizes and pages are logged as writes arrive and the kernel holds
        // no dirty pages (no writeback cache): a close needs no round trip.
        info.pointee.noflush = 1
        info.pointee.fh = policy.direct ? 1 : 0
    }

    private static func writeOnly(_ info: UnsafeMutablePointer<fuse_file_info>) -> Bool {
        info.pointee.flags & O_ACCMODE == O_WRONLY
    }

    func open(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        guard let info else {
            fuse_reply_err(req, EINVAL)
            return
        }
        if let inode = FUSEAdapter.control(inode) { return controlOpen(req, inode, info) }
        FUSEAdapter.replying(req) {
            if FileSystem.isFrozen(inode), info.pointee.flags & O_ACCMODE != O_RDONLY { throw FileSystemError.readOnly }
            let mode = try fs.open(inode, truncate: info.pointee.flags & O_TRUNC != 0)
            prepare(info, cachePolicy.opened(inode, mode: mode, writeOnly: FUSEAdapter.writeOnly(info)))
            fuse_reply_open(req, info)
        }
    }

    func create(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t,
                _ info: UnsafeMutablePointer<fuse_file_info>?) {
        FUSEAdapter.replying(req) {
            guard let info else { throw FileSystemError.invalid }
            let name = try FUSEAdapter.name(name)
            if let parent = FUSEAdapter.control(parent) { return controlCreate(req, parent, try FUSEAdapter.controlName(name), info) }
            try FUSEAdapter.refuseControlName(parent, name)
            let attributes = try fs.createAndOpen(parent: parent, name: name, mode: S_IFREG | mode & 0o7777,
                                                  caller: FUSEAdapter.caller(req), opening: true)
            prepare(info, cachePolicy.opened(UInt64(attributes.st_ino), mode: attributes.st_mode,
                                             writeOnly: FUSEAdapter.writeOnly(info)))
            var entry = FUSEAdapter.entry(attributes, timeout: FUSEAdapter.cacheSeconds)
            fuse_reply_create(req, &entry, info)
        }
    }

    func read(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t,
              _ info: UnsafeMutablePointer<fuse_file_info>?) {
        if let inode = FUSEAdapter.control(inode) {
            return controlRead(req, inode, size, offset, handle: info?.pointee.fh ?? 0)
        }
        FUSEAdapter.replying(req) {
            guard offset >= 0 else { throw FileSystemError.invalid }
            // Straight from the pool's pages: the kernel copies from them
            // while the file system keeps them from being freed.
            try fs.read(inode, offset: UInt64(offset), size: size, attributesStale: { invalidateAttributes(inode) }) {
                _ = fuse_reply_iov(req, $0.baseAddress, Int32($0.count))
            }
        }
    }

    /// After a listing of entries: relatime (FileSystem+Access.swift).
    func noteAccess(_ inode: fuse_ino_t) {
        if fs.accessed(inode) { invalidateAttributes(inode) }
    }

    /// The kernel drops the attributes it caches for `inode` (its atime moved).
    func invalidateAttributes(_ inode: fuse_ino_t) {
        guard let session else { return }
        _ = fuse_lowlevel_notify_inval_inode(session, inode, -1, 0)
    }

    /// Writes arrive in libfuse's buffer (fuse_buf_copy would also take a
    /// spliced pipe, which the mount does not ask for): copied once, into
    /// pool pages.
    func write(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ buffers: UnsafeMutablePointer<fuse_bufvec>?, _ offset: off_t) {
        guard let buffers else {
            fuse_reply_err(req, EINVAL)
            return
        }
        let size = fuse_buf_size(buffers)
        if let inode = FUSEAdapter.control(inode) {
            // Control files take small texts: bring them into memory first.
            return withUnsafeTemporaryAllocation(of: CChar.self, capacity: max(size, 1)) { text in
                var memory = FUSEAdapter.bufferVector(UnsafeMutableRawBufferPointer(text))
                let copied = fuse_buf_copy(&memory, buffers, fuse_buf_copy_flags(rawValue: 0))
                controlWrite(req, inode, text.baseAddress, max(copied, 0), offset)
            }
        }
        FUSEAdapter.replying(req) {
            guard offset >= 0 else { throw FileSystemError.invalid }
            let caller = FUSEAdapter.caller(req)
            let vector = buffers.pointee
            // One buffer in memory (what /dev/fuse gives): copied the pool's way.
            if vector.count == 1, vector.idx == 0, vector.off == 0, vector.buf.flags.rawValue & FUSE_BUF_IS_FD.rawValue == 0 {
                let source = UnsafeRawBufferPointer(start: vector.buf.mem, count: size)
                _ = fuse_reply_write(req, try fs.write(inode, offset: UInt64(offset), from: source, by: caller))
                return
            }
            let written = try fs.write(inode, offset: UInt64(offset), count: size, by: caller) { segment in
                var destination = FUSEAdapter.bufferVector(segment)
                guard fuse_buf_copy(&destination, buffers, fuse_buf_copy_flags(rawValue: 0)) == segment.count else {
                    throw FileSystemError.io
                }
            }
            fuse_reply_write(req, written)
        }
    }

    /// One memory buffer as libfuse's vector (FUSE_BUFVEC_INIT is a macro).
    static func bufferVector(_ bytes: UnsafeMutableRawBufferPointer) -> fuse_bufvec {
        fuse_bufvec(count: 1, idx: 0, off: 0,
                    buf: (fuse_buf(size: bytes.count, flags: fuse_buf_flags(rawValue: 0), mem: bytes.baseAddress, fd: -1, pos: 0)))
    }

    func release(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        if FUSEAdapter.control(inode) != nil {
            controlRelease(info?.pointee.fh ?? 0)
        } else {
            cachePolicy.released(inode, direct: info?.pointee.fh == 1)
            fs.release(inode)
        }
        fuse_reply_err(req, 0)
    }

    func fsync(_ req: fuse_req_t?, _ inode: fuse_ino_t) {
        FUSEAdapter.replying(req) {
            if FUSEAdapter.control(inode) == nil { try fs.sync(inode) }
            fuse_reply_err(req, 0)
        }
    }

    func fallocate(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ mode: Int32, _ offset: off_t, _ length: off_t) {
        FUSEAdapter.replying(req) {
            guard FUSEAdapter.control(inode) == nil else { throw FileSystemError.notSupported }
            guard offset >= 0, length > 0 else { throw FileSystemError.invalid }
            do {
                try fs.allocateSpace(inode, mode: mode, offset: UInt64(offset), length: UInt64(length))
            } catch {
                // One that ran out midway keeps the chunks it allocated and
                // the size they reach, which the kernel does not take on a failure.
                if let session { _ = fuse_lowlevel_notify_inval_inode(session, inode, -1, 0) }
                throw error
            }
            fuse_reply_err(req, 0)
        }
    }

    /// copy_file_range(2) (and so cp, shutil.copyfile): shared pages, not
    /// copied bytes (FileSystem+Clone.swift). The control tree's files say
    /// EOPNOTSUPP, and the kernel copies them through reads and writes.
    func copyFileRange(_ req: fuse_req_t?, _ source: fuse_ino_t, _ sourceOffset: off_t, _ target: fuse_ino_t,
                       _ targetOffset: off_t, _ length: Int, _ flags: Int32) {
        FUSEAdapter.replying(req) {
            guard FUSEAdapter.control(source) == nil, FUSEAdapter.control(target) == nil else {
                throw FileSystemError.notSupported
            }
            guard sourceOffset >= 0, targetOffset >= 0, flags == 0 else { throw FileSystemError.invalid }
            let copied = try fs.copyRange(from: source, at: UInt64(sourceOffset), to: target, at: UInt64(targetOffset),
                                          count: UInt64(length), by: FUSEAdapter.caller(req))
            fuse_reply_write(req, copied)
        }
    }

    /// The kernel asks only for SEEK_DATA and SEEK_HOLE; it answers the rest.
    func lseek(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ offset: off_t, _ whence: Int32) {
        FUSEAdapter.replying(req) {
            guard FUSEAdapter.control(inode) == nil, offset >= 0, whence == SEEK_DATA || whence == SEEK_HOLE else {
                throw FileSystemError.invalid
            }
            fuse_reply_lseek(req, off_t(try fs.seek(inode, from: UInt64(offset), data: whence == SEEK_DATA)))
        }
    }

    // MARK: Directories

    func opendir(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        FUSEAdapter.replying(req) {
            // Held open, a directory keeps its slots: offsets stay valid.
            if FUSEAdapter.control(inode) == nil { _ = try fs.open(inode, truncate: false) }
            fuse_reply_open(req, info)
        }
    }

    func releasedir(_ req: fuse_req_t?, _ inode: fuse_ino_t) {
        if FUSEAdapter.control(inode) == nil { fs.release(inode) }
        fuse_reply_err(req, 0)
    }

    func readdir(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t, plus: Bool) {
        if let inode = FUSEAdapter.control(inode) { return controlReaddir(req, inode, size, offset, plus: plus) }
        FUSEAdapter.replying(req) {
            if offset == 0 && noteDirectoryAccess { noteAccess(inode) }
            try DirectoryReply.send(req, size: size, plus: plus) { reply in
                let extra = inode == FUSE_ROOT_ID ? (name: FUSEAdapter.controlName, attributes: controlDirectory) : nil
                try fs.listDirectory(inode, from: Int64(offset), extra: extra, attributes: plus) { name, attributes, next in
                    // The control tree's ".pool" changes underneath, and a
                    // snapshot's entries are asked for at each use (lookup): not kept.
                    let kept = attributes.st_ino & UInt(FUSEAdapter.controlBit) == 0 && !FileSystem.isFrozen(inode)
                    return reply.add(name, attributes, next: off_t(next), timeout: kept ? FUSEAdapter.cacheSeconds : 0)
                }
            }
        }
    }

    func statfs(_ req: fuse_req_t?) {
        let (files, usage) = fs.statistics()
        let pageSize = UInt64(fs.pool.pageSize)
        var st = statvfs()
        st.f_bsize = UInt(pageSize)
        st.f_frsize = UInt(pageSize)
        st.f_blocks = UInt(usage.capacityBytes / pageSize)
        st.f_bfree = UInt(usage.freeBytes / pageSize)
        st.f_bavail = st.f_bfree
        // Inodes are heap objects: as many more as there are free bytes for them.
        st.f_ffree = UInt(usage.freeBytes / 256)
        st.f_files = st.f_ffree + UInt(files)
        st.f_namemax = UInt(FileSystem.maximumNameLength)
        fuse_reply_statfs(req, &st)
    }

    // MARK: Extended attributes

    func setxattr(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ name: UnsafePointer<CChar>?,
                  _ value: UnsafePointer<CChar>?, _ size: Int, _ flags: Int32) {
        FUSEAdapter.replying(req) {
            guard FUSEAdapter.control(inode) == nil else { throw FileSystemError.notSupported }
            let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
            try fs.setXattr(inode, name: try FUSEAdapter.name(name), value: bytes, flags: flags)
            fuse_reply_err(req, 0)
        }
    }

    /// Replies with `bytes`, or their size when asked with size 0.
    private func replyXattr(_ req: fuse_req_t?, _ bytes: [UInt8], _ size: Int) throws {
        if size == 0 { fuse_reply_xattr(req, bytes.count); return }
        guard bytes.count <= size else { throw FileSystemError.range }
        _ = bytes.withUnsafeBytes { fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
    }

    func getxattr(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ size: Int) {
        FUSEAdapter.replying(req) {
            guard FUSEAdapter.control(inode) == nil else { throw FileSystemError.noAttribute }
            try replyXattr(req, try fs.xattr(inode, name: try FUSEAdapter.name(name)), size)
        }
    }

    func listxattr(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ size: Int) {
        FUSEAdapter.replying(req) {
            let names = FUSEAdapter.control(inode) == nil ? try fs.xattrNames(inode) : []
            try replyXattr(req, names.flatMap { $0.bytes + [0] }, size)
        }
    }

    func removexattr(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        FUSEAdapter.replying(req) {
            guard FUSEAdapter.control(inode) == nil else { throw FileSystemError.notSupported }
            try fs.removeXattr(inode, name: try FUSEAdapter.name(name))
            fuse_reply_err(req, 0)
        }
    }
}
