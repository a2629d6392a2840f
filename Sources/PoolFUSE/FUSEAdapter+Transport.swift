import FUSETransport
import PoolFS
#if canImport(Glibc)
import Glibc
#endif

/// What the transport asks of the adapter: reads and writes that came on
/// a ring, answered without libfuse, and what the kernel granted.
extension FUSEAdapter: FUSETransportHandler {
    /// A read that came on a ring (RingEntry.swift), copied into the
    /// ring's buffer; false for control files, which libfuse must see.
    public func ringRead(_ entry: RingEntry, node: UInt64, offset: UInt64, size: Int) -> Bool {
        guard FUSEAdapter.control(node) == nil else { return false }
        do {
            guard offset <= UInt64(Int64.max) else { throw FileSystemError.invalid }
            try fs.read(node, offset: offset, size: size, attributesStale: { invalidateAttributes(node) }) { entry.reply($0) }
        } catch {
            entry.fail(FUSEAdapter.errno(error))
        }
        return true
    }

    /// A write that came on a ring, copied from the ring's buffer into pool
    /// pages; false for control files.
    public func ringWrite(_ entry: RingEntry, node: UInt64, offset: UInt64, _ data: UnsafeRawBufferPointer,
                          uid: UInt32, gid: UInt32) -> Bool {
        guard FUSEAdapter.control(node) == nil else { return false }
        do {
            guard offset <= UInt64(Int64.max) else { throw FileSystemError.invalid }
            entry.replyWritten(try fs.write(node, offset: offset, from: data, by: FileSystem.Caller(uid: uid, gid: gid)))
        } catch {
            entry.fail(FUSEAdapter.errno(error))
        }
        return true
    }

    public func directIOAllowsSharedMappings() {
        // Every file opened from now on goes direct.
        cachePolicy.sharedMappingsCoherent.store(true, ordering: .releasing)
    }

    public func requestsArrive(_ how: String) {
        tree.requests.withLock { $0 = how }
    }
}
