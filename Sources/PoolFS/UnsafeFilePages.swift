import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// A file's pages as this process maps them: the one place in PoolFS that
/// holds raw pointers into the pool. Valid while the pool is open and the
/// caller holds the inode's lock (so no run is freed under it).
struct UnsafeFilePages {
    let pool: Pool

    /// Zero bytes that holes point reads at, never written.
    nonisolated(unsafe) static let zeros: UnsafeMutableRawPointer = {
        mmap(nil, zeroBytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
    }()
    static let zeroBytes = 1 << 20

    @inline(__always)
    func pointer(_ address: GlobalAddress, _ offset: UInt64) -> UnsafeMutableRawPointer {
        pool.unsafePointer(to: address)! + Int(offset)
    }

    func bytes(_ address: GlobalAddress, at offset: UInt64, count: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: pointer(address, offset), count: count)
    }

    func zero(_ address: GlobalAddress, at offset: UInt64, count: Int) {
        guard count > 0 else { return }
        memset(pointer(address, offset), 0, count)
    }

    func segment(_ address: GlobalAddress, at offset: UInt64, count: Int) -> iovec {
        iovec(iov_base: pointer(address, offset), iov_len: count)
    }

    static func zeroSegment(count: Int) -> iovec {
        iovec(iov_base: zeros, iov_len: count)
    }
}
