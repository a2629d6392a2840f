import CFuse
import PoolCore
import PoolFS
#if canImport(Glibc)
import Glibc
#endif

/// Handlers for `.pool/`: texts made at open, region bytes straight from
/// pool memory, heaps made and destroyed by mkdir and rmdir. Nothing here
/// is cached by the kernel: other processes change the pool underneath.
extension FUSEAdapter {
    func controlAttributes(_ node: ControlTree.Node) -> stat {
        var st = stat()
        st.st_ino = UInt(node.inode | FUSEAdapter.controlBit)
        st.st_mode = (node.kind == .directory ? S_IFDIR : S_IFREG) | node.mode
        st.st_nlink = node.kind == .directory ? 2 : 1
        st.st_uid = node.owner?.uid ?? owner.uid
        st.st_gid = node.owner?.gid ?? owner.gid
        st.st_size = Int(node.size ?? 0)
        st.st_blksize = 4096
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        st.st_atim = now
        st.st_mtim = now
        st.st_ctim = now
        return st
    }

    var controlDirectory: stat { controlAttributes(tree.node(ControlTree.control)!) }

    func controlLookup(_ req: fuse_req_t?, _ parent: UInt64, _ name: String) {
        if parent == ControlTree.snapshots {
            return FUSEAdapter.replying(req) {
                guard let root = fs.snapshot(named: FileName(name)) else { throw FileSystemError.notFound }
                replyEntry(req, try fs.attributes(of: root))
            }
        }
        guard let node = tree.lookup(parent: parent, name: name) else {
            fuse_reply_err(req, ENOENT)
            return
        }
        replyEntry(req, controlAttributes(node), timeout: 0)
    }

    func controlGetattr(_ req: fuse_req_t?, _ inode: UInt64) {
        guard let node = tree.node(inode) else {
            fuse_reply_err(req, ENOENT)
            return
        }
        var st = controlAttributes(node)
        fuse_reply_attr(req, &st, 0)
    }

    func controlReaddir(_ req: fuse_req_t?, _ inode: UInt64, _ size: Int, _ offset: off_t, plus: Bool) {
        if inode == ControlTree.snapshots { return snapshotsReaddir(req, size, offset, plus: plus) }
        guard let children = tree.children(inode) else {
            fuse_reply_err(req, ENOTDIR)
            return
        }
        let parent = inode == ControlTree.control ? UInt64(FUSE_ROOT_ID) : ControlTree.control | FUSEAdapter.controlBit
        let entries = [(".", inode | FUSEAdapter.controlBit, true), ("..", parent, true)]
            + children.map { ($0.name, $0.inode | FUSEAdapter.controlBit, $0.kind == .directory) }
        DirectoryReply.send(req, size: size, plus: plus) { reply in
            for index in entries.indices where index >= offset {
                let (name, ino, isDirectory) = entries[index]
                var st = stat()
                st.st_ino = UInt(ino)
                st.st_mode = isDirectory ? S_IFDIR : S_IFREG
                // readdirplus: attributes made now, kept by nobody.
                if plus, ino != FUSE_ROOT_ID, let node = tree.node(ino & ~FUSEAdapter.controlBit) { st = controlAttributes(node) }
                if !reply.add(FileName(name), st, next: off_t(index + 1), timeout: 0) { break }
            }
        }
    }

    /// `.pool/snapshots/`: each entry a snapshot's root, a file system
    /// directory (read-only) with its own attributes.
    private func snapshotsReaddir(_ req: fuse_req_t?, _ size: Int, _ offset: off_t, plus: Bool) {
        let entries = [(FileName("."), ControlTree.snapshots | FUSEAdapter.controlBit),
                       (FileName(".."), ControlTree.control | FUSEAdapter.controlBit)]
            + fs.snapshots().map { ($0.name, $0.root) }
        DirectoryReply.send(req, size: size, plus: plus) { reply in
            for index in entries.indices where index >= offset {
                let (name, ino) = entries[index]
                var st = stat()
                st.st_ino = UInt(ino)
                st.st_mode = S_IFDIR
                if plus, FUSEAdapter.control(ino) == nil, let attributes = try? fs.attributes(of: ino) { st = attributes }
                if !reply.add(name, st, next: off_t(index + 1), timeout: FUSEAdapter.control(ino) == nil ? FUSEAdapter.cacheSeconds : 0) {
                    break
                }
            }
        }
    }

    func controlOpen(_ req: fuse_req_t?, _ inode: UInt64, _ info: UnsafeMutablePointer<fuse_file_info>) {
        guard let node = tree.node(inode), node.kind == .file else {
            fuse_reply_err(req, tree.node(inode) == nil ? ENOENT : EISDIR)
            return
        }
        // Texts change underneath: no page cache. A region's bytes go
        // through it (so the file can be mapped), dropped at each open:
        // an open shows what library users wrote before it.
        info.pointee.direct_io = tree.isRegion(inode) ? 0 : 1
        info.pointee.keep_cache = 0
        info.pointee.fh = 0
        let writing = info.pointee.flags & O_ACCMODE != O_RDONLY
        if writing, !tree.isWritable(inode) {
            fuse_reply_err(req, EACCES)
            return
        }
        if !writing, !tree.isRegion(inode) {
            // The text is made once, at open: one consistent snapshot per reader.
            guard let text = tree.contents(inode) else {
                fuse_reply_err(req, ENOENT)
                return
            }
            info.pointee.fh = openTexts.withLock { state in
                defer { state.next += 1 }
                state.texts[state.next] = text
                return state.next
            }
        }
        fuse_reply_open(req, info)
    }

    func controlRead(_ req: fuse_req_t?, _ inode: UInt64, _ size: Int, _ offset: off_t, handle: UInt64) {
        if handle == 0 {
            // A region: reply with a pointer into the pool's pages, no copy.
            let replied = tree.withRegionBytes(inode) { bytes -> Bool in
                FUSEAdapter.replySlice(req, UnsafeRawBufferPointer(bytes), offset, size)
                return true
            }
            if replied == nil { fuse_reply_err(req, ENOENT) }
            return
        }
        let text = openTexts.withLock { $0.texts[handle] } ?? []
        text.withUnsafeBytes { FUSEAdapter.replySlice(req, $0, offset, size) }
    }

    /// Replies with what a read of `size` at `offset` finds in `bytes`.
    static func replySlice(_ req: fuse_req_t?, _ bytes: UnsafeRawBufferPointer, _ offset: off_t, _ size: Int) {
        let start = min(Int(offset), bytes.count)
        let count = min(size, bytes.count - start)
        fuse_reply_buf(req, bytes.baseAddress.map { ($0 + start).assumingMemoryBound(to: CChar.self) }, count)
    }

    func controlWrite(_ req: fuse_req_t?, _ inode: UInt64, _ buffer: UnsafePointer<CChar>?, _ size: Int, _ offset: off_t) {
        if tree.isRegion(inode) {
            // Into the region's pages in one copy; a region does not grow.
            let written = tree.withRegionBytes(inode) { bytes -> Int32 in
                guard let buffer, offset >= 0, Int(offset) <= bytes.count else { return -EINVAL }
                let count = min(size, bytes.count - Int(offset))
                guard count > 0 || size == 0 else { return -EFBIG }
                (bytes.baseAddress! + Int(offset)).copyMemory(from: buffer, byteCount: count)
                return Int32(count)
            }
            switch written {
            case let count? where count >= 0: fuse_reply_write(req, Int(count))
            case let error?: fuse_reply_err(req, -error)
            case nil: fuse_reply_err(req, ENOENT)
            }
            return
        }
        // A policy is written whole, at its start (`echo 'bind 0' > policy`).
        guard offset == 0, let buffer else {
            fuse_reply_err(req, offset == 0 ? EINVAL : ESPIPE)
            return
        }
        let text = String(decoding: UnsafeRawBufferPointer(start: buffer, count: size), as: UTF8.self)
        FUSEAdapter.replying(req) {
            try tree.write(inode, text: text)
            fuse_reply_write(req, size)
        }
    }

    /// Truncation (a region file's sizing, or a policy's emptying), and
    /// chmod and chown where the tree takes them.
    func controlSetattr(_ req: fuse_req_t?, _ inode: UInt64, _ new: stat, _ fields: Int32) {
        FUSEAdapter.replying(req) {
            guard tree.node(inode) != nil else { throw ControlTree.Refusal.notFound }
            let times = FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW
                | FUSE_SET_ATTR_CTIME
            let access = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID
            // chmod and chown: regions, and .pool/ with its fixed entries.
            let changesAccess = fields & access != 0 && tree.takesAccess(inode)
            guard fields & ~(FUSE_SET_ATTR_SIZE | times | access) == 0, fields & access == 0 || changesAccess,
                  changesAccess || tree.isWritable(inode), fields & FUSE_SET_ATTR_SIZE == 0 || tree.isWritable(inode) else {
                throw ControlTree.Refusal.notPermitted
            }
            if changesAccess {
                try tree.setAccess(inode, mode: fields & FUSE_SET_ATTR_MODE != 0 ? new.st_mode : nil,
                                   uid: fields & FUSE_SET_ATTR_UID != 0 ? new.st_uid : nil,
                                   gid: fields & FUSE_SET_ATTR_GID != 0 ? new.st_gid : nil,
                                   mountOwner: ControlTree.Owner(uid: owner.uid, gid: owner.gid))
            }
            if fields & FUSE_SET_ATTR_SIZE != 0, tree.isRegion(inode) {
                guard new.st_size >= 0 else { throw ControlTree.Refusal.invalid }
                try tree.resizeRegion(inode, to: UInt64(new.st_size))
            }
            var st = controlAttributes(tree.node(inode)!)
            fuse_reply_attr(req, &st, 0)
        }
    }

    func controlCreate(_ req: fuse_req_t?, _ parent: UInt64, _ name: String, _ info: UnsafeMutablePointer<fuse_file_info>) {
        FUSEAdapter.replying(req) {
            let node = try tree.createRegionFile(parent: parent, name: name, access: FUSEAdapter.creatorsRegion(req))
            var entry = FUSEAdapter.entry(controlAttributes(node), timeout: 0)
            info.pointee.direct_io = 0
            info.pointee.fh = 0
            fuse_reply_create(req, &entry, info)
        }
    }

    /// A new region: its creator's, 0600, whatever mode the create asked
    /// (a region is memory, often private; chmod opens it up).
    static func creatorsRegion(_ req: fuse_req_t?) -> RegionAccess {
        let caller = caller(req)
        return RegionAccess(uid: caller.uid, gid: caller.gid, mode: 0o600)
    }

    func controlRelease(_ handle: UInt64) {
        if handle != 0 { _ = openTexts.withLock { $0.texts.removeValue(forKey: handle) } }
    }
}
