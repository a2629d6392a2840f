import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// A file's pages as this process maps them: the one place in PoolFS that
/// holds raw pointers into the pool. Valid while the pool is open and the
/// caller holds the inode's lock (so no run is freed under it) and the
/// tree's lock (so no remote page is evicted under it: FileSystem+Remote).
/// Pages on a remote shelf are read into the cache first; a node that does
/// not answer throws (EIO).
struct UnsafeFilePages {
    let pool: Pool

    /// Zero bytes that holes point reads at, never written.
    nonisolated(unsafe) static let zeros: UnsafeMutableRawPointer = {
        mmap(nil, zeroBytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
    }()
    static let zeroBytes = 1 << 20

    /// Bytes to store into: call `written` once they are in.
    func bytes(_ address: GlobalAddress, at offset: UInt64, count: Int) throws -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: try pool.unsafeResidentPointer(to: address.advanced(by: offset), count: count,
                                                                           writing: true), count: count)
    }

    func written(_ address: GlobalAddress, at offset: UInt64, count: Int) {
        pool.noteWritten(at: address.advanced(by: offset), count: count)
    }

    func zero(_ address: GlobalAddress, at offset: UInt64, count: Int) throws {
        guard count > 0 else { return }
        memset(try bytes(address, at: offset, count: count).baseAddress!, 0, count)
        written(address, at: offset, count: count)
    }

    /// `count` bytes of one run copied into another's start (a fragment moving).
    func copy(_ count: Int, from old: GlobalAddress, to new: GlobalAddress) throws {
        let source = try pool.unsafeResidentPointer(to: old, count: count, writing: false)
        try bytes(new, at: 0, count: count).copyMemory(from: UnsafeRawBufferPointer(start: source, count: count))
        written(new, at: 0, count: count)
    }

    func segment(_ address: GlobalAddress, at offset: UInt64, count: Int) throws -> iovec {
        iovec(iov_base: try pool.unsafeResidentPointer(to: address.advanced(by: offset), count: count, writing: false),
              iov_len: count)
    }

    static func zeroSegment(count: Int) -> iovec {
        iovec(iov_base: zeros, iov_len: count)
    }
}
