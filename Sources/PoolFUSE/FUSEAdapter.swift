import CFuse
import FUSETransport
import PoolCore
import PoolFS
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The libfuse3 low-level adapter: one handler per operation, each ending
/// in exactly one fuse_reply_*. Inodes with `controlBit` set are the
/// control tree's (`.pool/`); the rest are the file system's. Handlers
/// reach this object through the session's userdata, never through globals.
public final class FUSEAdapter: @unchecked Sendable {
    let fs: FileSystem
    let tree: ControlTree
    static let controlBit: UInt64 = 1 << 62
    static let controlName: FileName = ".pool"
    /// Names and attributes of the file system change only through this
    /// mount, so the kernel may keep them; control files change underneath.
    static let cacheSeconds = 3600.0

    /// How the kernel caches each open file.
    let cachePolicy = CachePolicy()
    /// Texts of open control files, by file handle.
    let openTexts = Mutex<(next: UInt64, texts: [UInt64: [UInt8]])>((1, [:]))
    let owner = (uid: getuid(), gid: getgid())

    public init(fs: FileSystem, tree: ControlTree) {
        self.fs = fs
        self.tree = tree
    }

    /// The adapter a request is for: libfuse's session userdata is the
    /// transport (FUSETransport.sessionUserdata), whose handler this is.
    static func session(_ req: fuse_req_t?) -> FUSEAdapter {
        unsafeDowncast(FUSETransport.handler(ofSessionUserdata: fuse_req_userdata(req)!), to: FUSEAdapter.self)
    }

    /// libfuse's session, set before it runs, for the notifications.
    var session: OpaquePointer?
    /// Set while the session runs (after the mount went to the background).
    var pageCacheInvalidator: PageCacheInvalidator?
    /// Whether listing a directory moves its atime (not with nodiratime).
    var noteDirectoryAccess = true

    /// The control tree's inode behind a FUSE inode, if it is one.
    @inline(__always)
    static func control(_ inode: fuse_ino_t) -> UInt64? {
        inode & controlBit != 0 ? inode & ~controlBit : nil
    }

    static func caller(_ req: fuse_req_t?) -> FileSystem.Caller {
        let context = fuse_req_ctx(req)!.pointee
        return FileSystem.Caller(uid: context.uid, gid: context.gid)
    }

    /// Replies with the result of `body`, or the errno it threw.
    @inline(__always)
    static func replying(_ req: fuse_req_t?, _ body: () throws -> Void) {
        do {
            try body()
        } catch {
            fuse_reply_err(req, errno(error))
        }
    }

    static func errno(_ error: any Error) -> Int32 {
        switch error {
        case let error as FileSystemError: error.code
        case let refusal as ControlTree.Refusal: errno(refusal)
        case let error as PoolError: error.errno
        default: EIO
        }
    }

    static func errno(_ refusal: ControlTree.Refusal) -> Int32 {
        switch refusal {
        case .notPermitted: EPERM
        case .exists: EEXIST
        case .notFound: ENOENT
        case .notEmpty: ENOTEMPTY
        case .invalid: EINVAL
        }
    }

    /// A name, or a symlink's target, as the kernel's bytes.
    static func name(_ name: UnsafePointer<CChar>?) throws -> FileName {
        guard let name else { throw FileSystemError.invalid }
        return FileName(cString: name)
    }

    /// A name under `.pool/` as the control tree takes it: heap and region
    /// names are ASCII, so bytes that are not UTF-8 (shown as U+FFFD) name
    /// nothing there and make no valid new name.
    static func controlName(_ name: FileName) throws -> String {
        try FileSystem.checkLength(name)
        return name.description
    }

    /// The root's ".pool", which is the control tree's, never a file's.
    static func isControlName(_ parent: fuse_ino_t, _ name: FileName) -> Bool {
        parent == FUSE_ROOT_ID && name == controlName
    }

    static func refuseControlName(_ parent: fuse_ino_t, _ name: FileName) throws {
        if isControlName(parent, name) { throw FileSystemError.exists }
    }

    /// A name and its attributes, for the kernel to keep `timeout` seconds.
    static func entry(_ attributes: stat, timeout: Double) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = fuse_ino_t(attributes.st_ino)
        entry.attr = attributes
        entry.attr_timeout = timeout
        entry.entry_timeout = timeout
        return entry
    }

    func replyEntry(_ req: fuse_req_t?, _ attributes: stat, timeout: Double = cacheSeconds) {
        var entry = FUSEAdapter.entry(attributes, timeout: timeout)
        fuse_reply_entry(req, &entry)
    }

    // MARK: The operations table

    static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { _, connection in FUSEAdapter.configure(connection) }
        ops.lookup = { req, parent, name in FUSEAdapter.session(req).lookup(req, parent, name) }
        ops.getattr = { req, inode, _ in FUSEAdapter.session(req).getattr(req, inode) }
        ops.setattr = { req, inode, attributes, fields, _ in FUSEAdapter.session(req).setattr(req, inode, attributes, fields) }
        ops.readlink = { req, inode in FUSEAdapter.session(req).readlink(req, inode) }
        ops.mknod = { req, parent, name, mode, rdev in FUSEAdapter.session(req).make(req, parent, name, mode, UInt64(rdev)) }
        ops.mkdir = { req, parent, name, mode in FUSEAdapter.session(req).make(req, parent, name, mode | S_IFDIR, 0) }
        ops.symlink = { req, target, parent, name in FUSEAdapter.session(req).symlink(req, target, parent, name) }
        ops.unlink = { req, parent, name in FUSEAdapter.session(req).remove(req, parent, name, directory: false) }
        ops.rmdir = { req, parent, name in FUSEAdapter.session(req).remove(req, parent, name, directory: true) }
        ops.rename = { req, parent, name, newParent, newName, flags in
            FUSEAdapter.session(req).rename(req, parent, name, newParent, newName, flags)
        }
        ops.link = { req, inode, parent, name in FUSEAdapter.session(req).link(req, inode, parent, name) }
        ops.open = { req, inode, info in FUSEAdapter.session(req).open(req, inode, info) }
        ops.create = { req, parent, name, mode, info in FUSEAdapter.session(req).create(req, parent, name, mode, info) }
        ops.read = { req, inode, size, offset, info in FUSEAdapter.session(req).read(req, inode, size, offset, info) }
        ops.write_buf = { req, inode, buffers, offset, _ in FUSEAdapter.session(req).write(req, inode, buffers, offset) }
        ops.flush = { req, _, _ in fuse_reply_err(req, 0) }
        ops.release = { req, inode, info in FUSEAdapter.session(req).release(req, inode, info) }
        ops.fsync = { req, inode, _, _ in FUSEAdapter.session(req).fsync(req, inode) }
        ops.opendir = { req, inode, info in FUSEAdapter.session(req).opendir(req, inode, info) }
        ops.readdir = { req, inode, size, offset, _ in FUSEAdapter.session(req).readdir(req, inode, size, offset, plus: false) }
        ops.readdirplus = { req, inode, size, offset, _ in FUSEAdapter.session(req).readdir(req, inode, size, offset, plus: true) }
        ops.releasedir = { req, inode, _ in FUSEAdapter.session(req).releasedir(req, inode) }
        ops.fsyncdir = { req, _, _, _ in fuse_reply_err(req, 0) }
        ops.statfs = { req, _ in FUSEAdapter.session(req).statfs(req) }
        ops.setxattr = { req, inode, name, value, size, flags in
            FUSEAdapter.session(req).setxattr(req, inode, name, value, size, flags)
        }
        ops.getxattr = { req, inode, name, size in FUSEAdapter.session(req).getxattr(req, inode, name, size) }
        ops.listxattr = { req, inode, size in FUSEAdapter.session(req).listxattr(req, inode, size) }
        ops.removexattr = { req, inode, name in FUSEAdapter.session(req).removexattr(req, inode, name) }
        ops.fallocate = { req, inode, mode, offset, length, _ in
            FUSEAdapter.session(req).fallocate(req, inode, mode, offset, length)
        }
        ops.lseek = { req, inode, offset, whence, _ in FUSEAdapter.session(req).lseek(req, inode, offset, whence) }
        ops.copy_file_range = { req, source, sourceOffset, _, target, targetOffset, _, length, flags in
            FUSEAdapter.session(req).copyFileRange(req, source, sourceOffset, target, targetOffset, length, flags)
        }
        ops.ioctl = { req, inode, command, _, _, flags, input, inputBytes, outputBytes in
            FUSEAdapter.session(req).ioctl(req, inode, command, flags, input, inputBytes, outputBytes)
        }
        ops.forget = { req, _, _ in fuse_reply_none(req) }
        ops.forget_multi = { req, _, _ in fuse_reply_none(req) }
        return ops
    }

    /// What the kernel may cache and how large requests are (NOTES.md).
    static func configure(_ connection: UnsafeMutablePointer<fuse_conn_info>?) {
        guard let connection else { return }
        // Splicing memory-resident data is slower than copying it; and
        // since file bytes change only through this mount, a new mtime
        // must not drop the page cache (the opens say when it is stale).
        let want = UInt32(bitPattern: FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_SPLICE_READ
            | FUSE_CAP_AUTO_INVAL_DATA)
        connection.pointee.want &= ~want
        connection.pointee.max_write = UInt32(FUSETransport.maxWrite)
        connection.pointee.max_readahead = UInt32(FUSETransport.maxWrite)
    }
}
