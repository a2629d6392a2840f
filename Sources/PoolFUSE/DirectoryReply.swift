import CFuse
import PoolFS
#if canImport(Glibc)
import Glibc
#endif

/// One readdir or readdirplus reply, filled in place until the kernel's
/// buffer is full.
struct DirectoryReply {
    let request: fuse_req_t?
    let buffer: UnsafeMutableBufferPointer<CChar>
    let plus: Bool
    private var used = 0

    /// Runs `body` with a reply of `size` bytes (on the stack when small), then sends it.
    static func send(_ request: fuse_req_t?, size: Int, plus: Bool, _ body: (inout DirectoryReply) throws -> Void) rethrows {
        try withUnsafeTemporaryAllocation(of: CChar.self, capacity: max(size, 1)) { buffer in
            var reply = DirectoryReply(request: request, buffer: UnsafeMutableBufferPointer(rebasing: buffer[0..<size]), plus: plus)
            try body(&reply)
            fuse_reply_buf(request, buffer.baseAddress, reply.used)
        }
    }

    /// Adds an entry whose offset is `next`; false once it no longer fits.
    /// readdirplus hands the kernel `attributes` to keep for `timeout` seconds.
    mutating func add(_ name: FileName, _ attributes: stat, next: off_t, timeout: Double) -> Bool {
        let room = buffer.count - used
        var st = attributes
        let needed: Int
        if plus {
            var entry = FUSEAdapter.entry(attributes, timeout: timeout)
            needed = name.withCString { fuse_add_direntry_plus(request, buffer.baseAddress! + used, room, $0, &entry, next) }
        } else {
            needed = name.withCString { fuse_add_direntry(request, buffer.baseAddress! + used, room, $0, &st, next) }
        }
        guard needed <= room else { return false }
        used += needed
        return true
    }
}
