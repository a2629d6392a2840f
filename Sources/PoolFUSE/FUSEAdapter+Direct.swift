import CFuse
import DirectFormat
import PoolFS
#if canImport(Glibc)
import Glibc
#endif

/// The ioctls of direct access (DirectRequest.swift): a lease of an open
/// file's layout, and a report of bytes written directly. Any other ioctl
/// is ENOTTY, as on tmpfs.
extension FUSEAdapter {
    func ioctl(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ command: UInt32, _ flags: UInt32,
               _ input: UnsafeRawPointer?, _ inputBytes: Int, _ outputBytes: Int) {
        FUSEAdapter.replying(req) {
            guard FUSEAdapter.control(inode) == nil, flags & UInt32(FUSE_IOCTL_COMPAT) == 0 else { throw FileSystemError.noIoctl }
            switch command {
            case DirectRequest.lease where outputBytes == DirectRequest.leaseBytes:
                guard let lease = try fs.leaseLayout(inode), let leases = fs.directLeases else {
                    throw FileSystemError.notSupported
                }
                var reply = [UInt8](repeating: 0, count: DirectRequest.leaseBytes)
                let path = Array(leases.directory.utf8)
                guard DirectRequest.pathOffset + path.count <= reply.count else { throw FileSystemError.notSupported }
                reply.withUnsafeMutableBytes { bytes in
                    for (index, word) in [DirectRequest.leaseMagic, UInt64(lease.slot), lease.inode, leases.identity,
                                          UInt64(path.count)].enumerated() {
                        bytes.storeBytes(of: word.littleEndian, toByteOffset: index * 8, as: UInt64.self)
                    }
                    bytes[DirectRequest.pathOffset...].copyBytes(from: path)
                }
                fuse_reply_ioctl(req, 0, reply, reply.count)
            case DirectRequest.wrote where inputBytes == DirectRequest.wroteBytes:
                guard let input else { throw FileSystemError.invalid }
                let start = UInt64(littleEndian: input.loadUnaligned(as: UInt64.self))
                let end = UInt64(littleEndian: input.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                guard start <= end else { throw FileSystemError.invalid }
                try fs.noteDirectWrite(inode, range: start..<end)
                // The kernel's copy of the times is stale now, and of the
                // bytes, where a mapping through the mount holds them.
                if let session { _ = fuse_lowlevel_notify_inval_inode(session, inode, -1, 0) }
                pageCacheInvalidator?.add(inode, start..<end)
                fuse_reply_ioctl(req, 0, nil, 0)
            default:
                throw FileSystemError.noIoctl
            }
        }
    }
}
