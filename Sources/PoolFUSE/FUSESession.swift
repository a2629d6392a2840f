import CFuse
import PoolCore
import PoolFS
#if canImport(Glibc)
import Glibc
#endif

/// The libfuse3 low-level adapter: one handler per operation, each ending
/// in exactly one fuse_reply_*. Handlers reach this object through the
/// session's userdata, never through globals.
public final class FUSESession: @unchecked Sendable {
    let tree: ControlTree
    /// Texts of open control files, by file handle; `lock`.
    private var openTexts: [UInt64: [UInt8]] = [:]
    private var nextHandle: UInt64 = 1
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let owner = (uid: getuid(), gid: getgid())

    public init(tree: ControlTree) {
        self.tree = tree
        lock.initialize(to: pthread_mutex_t())
        pthread_mutex_init(lock, nil)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    private func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return body()
    }

    static func session(_ req: fuse_req_t?) -> FUSESession {
        Unmanaged<FUSESession>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
    }

    // MARK: Attributes

    func attributes(_ node: ControlTree.Node) -> stat {
        var st = stat()
        st.st_ino = UInt(node.inode)
        st.st_mode = (node.kind == .directory ? S_IFDIR : S_IFREG) | node.mode
        st.st_nlink = node.kind == .directory ? 2 : 1
        st.st_uid = owner.uid
        st.st_gid = owner.gid
        st.st_size = Int(node.size ?? 0)
        st.st_blksize = 4096
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        st.st_atim = now
        st.st_mtim = now
        st.st_ctim = now
        return st
    }

    // MARK: Handlers

    func lookup(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        guard let name, let node = tree.lookup(parent: parent, name: String(cString: name)) else {
            fuse_reply_err(req, ENOENT)
            return
        }
        var entry = fuse_entry_param()
        entry.ino = node.inode
        entry.attr = attributes(node)
        // Control files change under the kernel: no caching of names or attributes.
        entry.attr_timeout = 0
        entry.entry_timeout = 0
        fuse_reply_entry(req, &entry)
    }

    func getattr(_ req: fuse_req_t?, _ inode: fuse_ino_t) {
        guard let node = tree.node(inode) else {
            fuse_reply_err(req, ENOENT)
            return
        }
        var st = attributes(node)
        fuse_reply_attr(req, &st, 0)
    }

    func readdir(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t) {
        guard let children = tree.children(inode) else {
            fuse_reply_err(req, ENOTDIR)
            return
        }
        let parent = inode == ControlTree.root ? ControlTree.root : ControlTree.root
        let entries = [(".", inode, true), ("..", parent, true)]
            + children.map { ($0.name, $0.inode, $0.kind == .directory) }
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(size, 1))
        defer { buffer.deallocate() }
        var used = 0
        var index = Int(offset)
        while index < entries.count {
            let (name, ino, isDirectory) = entries[index]
            var st = stat()
            st.st_ino = UInt(ino)
            st.st_mode = isDirectory ? S_IFDIR : S_IFREG
            let needed = fuse_add_direntry(req, buffer + used, size - used, name, &st, off_t(index + 1))
            if needed > size - used { break }
            used += needed
            index += 1
        }
        fuse_reply_buf(req, buffer, used)
    }

    func open(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        guard let info, let node = tree.node(inode), node.kind == .file else {
            fuse_reply_err(req, tree.node(inode) == nil ? ENOENT : EISDIR)
            return
        }
        let writing = info.pointee.flags & O_ACCMODE != O_RDONLY
        if writing {
            guard tree.isWritable(inode) else {
                fuse_reply_err(req, EACCES)
                return
            }
            // Writes go straight to the pool, reads straight from it.
            info.pointee.direct_io = 1
            info.pointee.fh = 0
            fuse_reply_open(req, info)
            return
        }
        if tree.isRegion(inode) {
            info.pointee.fh = 0
            // Other processes write the region as memory, behind the page cache.
            info.pointee.direct_io = 1
        } else {
            // The text is made once, at open: one consistent snapshot per reader.
            guard let text = tree.contents(inode) else {
                fuse_reply_err(req, ENOENT)
                return
            }
            info.pointee.fh = locked {
                let handle = nextHandle
                nextHandle += 1
                openTexts[handle] = text
                return handle
            }
            // Its size is unknown to stat: read to the end of the text.
            info.pointee.direct_io = 1
        }
        fuse_reply_open(req, info)
    }

    func read(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t,
              _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let handle = info?.pointee.fh ?? 0
        if handle == 0 {
            // A region: reply with a pointer into the pool's pages, no copy.
            let replied = tree.withRegionBytes(inode) { bytes -> Bool in
                let start = min(Int(offset), bytes.count)
                let count = min(size, bytes.count - start)
                fuse_reply_buf(req, bytes.baseAddress.map { UnsafeRawPointer($0 + start).assumingMemoryBound(to: CChar.self) }, count)
                return true
            }
            if replied == nil { fuse_reply_err(req, ENOENT) }
            return
        }
        let text = locked { openTexts[handle] } ?? []
        let start = min(Int(offset), text.count)
        let count = min(size, text.count - start)
        text.withUnsafeBufferPointer { bytes in
            fuse_reply_buf(req, UnsafeRawPointer(bytes.baseAddress! + start).assumingMemoryBound(to: CChar.self), count)
        }
    }

    static func errno(_ refusal: ControlTree.Refusal) -> Int32 {
        switch refusal {
        case .notPermitted: EPERM
        case .exists: EEXIST
        case .notFound: ENOENT
        case .notEmpty: ENOTEMPTY
        case .busy: EBUSY
        case .invalid: EINVAL
        }
    }

    func write(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ buffer: UnsafePointer<CChar>?, _ size: Int, _ offset: off_t) {
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
        do {
            try tree.write(inode, text: text)
            fuse_reply_write(req, size)
        } catch let refusal as ControlTree.Refusal {
            fuse_reply_err(req, FUSESession.errno(refusal))
        } catch {
            fuse_reply_err(req, EIO)
        }
    }

    func setattr(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ attributes: UnsafeMutablePointer<stat>?, _ fields: Int32) {
        // Only truncation of a writable control file, which holds no bytes to cut.
        guard let node = tree.node(inode) else {
            fuse_reply_err(req, ENOENT)
            return
        }
        guard fields & ~FUSE_SET_ATTR_SIZE == 0, tree.isWritable(inode) else {
            fuse_reply_err(req, EPERM)
            return
        }
        var st = self.attributes(node)
        fuse_reply_attr(req, &st, 0)
    }

    /// Runs a change of the tree named by `name`; `body` replies on
    /// success, a refusal becomes its errno.
    private func change(_ req: fuse_req_t?, _ name: UnsafePointer<CChar>?, _ body: (String) throws -> Void) {
        guard let name else {
            fuse_reply_err(req, EINVAL)
            return
        }
        do {
            try body(String(cString: name))
        } catch let refusal as ControlTree.Refusal {
            fuse_reply_err(req, FUSESession.errno(refusal))
        } catch {
            fuse_reply_err(req, EIO)
        }
    }

    func mkdir(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        change(req, name) { name in
            let node = try tree.makeDirectory(parent: parent, name: name)
            var entry = fuse_entry_param()
            entry.ino = node.inode
            entry.attr = attributes(node)
            fuse_reply_entry(req, &entry)
        }
    }

    func unlink(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        change(req, name) { name in
            try tree.remove(parent: parent, name: name)
            fuse_reply_err(req, 0)
        }
    }

    func rmdir(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        change(req, name) { name in
            try tree.removeDirectory(parent: parent, name: name)
            fuse_reply_err(req, 0)
        }
    }

    func release(_ req: fuse_req_t?, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        if let handle = info?.pointee.fh, handle != 0 { _ = locked { openTexts.removeValue(forKey: handle) } }
        fuse_reply_err(req, 0)
    }

    func statfs(_ req: fuse_req_t?) {
        let pageSize = UInt64(tree.pool.pageSize)
        let usage = tree.pool.usage()
        var st = statvfs()
        st.f_bsize = UInt(pageSize)
        st.f_frsize = UInt(pageSize)
        st.f_blocks = UInt(usage.capacityBytes / pageSize)
        st.f_bfree = UInt(usage.freeBytes / pageSize)
        st.f_bavail = st.f_bfree
        st.f_files = 1 << 20
        st.f_ffree = 1 << 20
        st.f_namemax = 255
        fuse_reply_statfs(req, &st)
    }

    // MARK: The operations table

    static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.lookup = { req, parent, name in FUSESession.session(req).lookup(req, parent, name) }
        ops.getattr = { req, inode, _ in FUSESession.session(req).getattr(req, inode) }
        ops.readdir = { req, inode, size, offset, _ in FUSESession.session(req).readdir(req, inode, size, offset) }
        ops.open = { req, inode, info in FUSESession.session(req).open(req, inode, info) }
        ops.read = { req, inode, size, offset, info in FUSESession.session(req).read(req, inode, size, offset, info) }
        ops.release = { req, _, info in FUSESession.session(req).release(req, info) }
        ops.statfs = { req, _ in FUSESession.session(req).statfs(req) }
        ops.write = { req, inode, buffer, size, offset, _ in FUSESession.session(req).write(req, inode, buffer, size, offset) }
        ops.setattr = { req, inode, attributes, fields, _ in FUSESession.session(req).setattr(req, inode, attributes, fields) }
        ops.mkdir = { req, parent, name, _ in FUSESession.session(req).mkdir(req, parent, name) }
        ops.rmdir = { req, parent, name in FUSESession.session(req).rmdir(req, parent, name) }
        ops.unlink = { req, parent, name in FUSESession.session(req).unlink(req, parent, name) }
        return ops
    }
}
