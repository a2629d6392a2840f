import PoolCore

/// The file system's metadata, durable in the pool: a chain of chunks of
/// records. A record counts once the chunk's `committed` word covers it (one
/// 8-byte store, after the record's bytes), so a mount killed at any instant
/// leaves each change whole or absent. A mount replays the chain, then
/// writes a fresh one holding just the current state and switches to it with
/// one store of the pool's `fileSystemLog` word.
///
/// Chunk: magic, next chunk, committed bytes, clean flag (first chunk only),
/// then records. Chunks are the file system's own page runs, of `heap`.
final class MetadataLog: @unchecked Sendable {
    static let magic: UInt64 = 0x3130_474f_4c53_4650   // "PFSLOG01"
    static let headerSize = 64
    enum Field { static let magic: UInt64 = 0, next: UInt64 = 8, committed: UInt64 = 16, clean: UInt64 = 24 }

    let pool: Pool
    let heap: Heap
    let chunkPages: Int
    var chunkBytes: Int { chunkPages * pool.pageSize }

    /// The chain being appended to; `mutex`.
    private(set) var chunks: [GlobalAddress] = []
    private var committed = 0
    /// A chunk kept in hand so that a full pool can still log the frees
    /// that make room; `mutex`.
    private var spare: GlobalAddress?
    private var bytes = 0
    /// Bytes the last rewrite wrote: the state's own size.
    private var rewritten = 0

    /// After a rewrite failed (a full pool), the next try waits until the
    /// log has grown this far.
    private var retryAt = 0

    /// Whether the log has grown well past the state it holds.
    var needsRewrite: Bool { mutex.withLock { bytes > max(64 << 20, 4 * rewritten, retryAt) } }
    private let mutex = ProcessMutex()

    init(pool: Pool, heap: Heap) {
        self.pool = pool
        self.heap = heap
        chunkPages = max(1, (1 << 20) / pool.pageSize)
    }

    struct Damaged: Error, CustomStringConvertible {
        let description: String
    }

    private func word(_ chunk: GlobalAddress, _ field: UInt64) throws -> UInt64 {
        try pool.load(at: chunk.advanced(by: field))
    }

    /// Made durable by the store itself (Pool.store persists).
    private func setWord(_ chunk: GlobalAddress, _ field: UInt64, _ value: UInt64) throws {
        try pool.store(value, at: chunk.advanced(by: field))
    }

    /// The chain starting at `head`, each chunk's records handed to `body`.
    private func walk(from head: GlobalAddress, _ body: (Change) throws -> Void) throws -> [GlobalAddress] {
        let chunkLimit = chunkBytes
        var chunks: [GlobalAddress] = []
        var chunk = head
        var seen = Set<GlobalAddress>()
        while !chunk.isNull {
            guard seen.insert(chunk).inserted else { throw Damaged(description: "its chain loops at \(chunk)") }
            guard (try? pool.load(at: chunk)) == MetadataLog.magic else {
                throw Damaged(description: "chunk \(chunk) has no log header")
            }
            let committed = Int(try pool.load(at: chunk.advanced(by: Field.committed)))
            guard committed >= 0, committed <= chunkLimit - MetadataLog.headerSize else {
                throw Damaged(description: "chunk \(chunk) says it holds \(committed) bytes")
            }
            chunks.append(chunk)
            try pool.withUnsafeMutableBytes(at: chunk.advanced(by: UInt64(MetadataLog.headerSize)), count: committed) { records -> Void in
                var position = 0
                while position < committed {
                    guard committed - position >= 5 else { throw Damaged(description: "chunk \(chunk) ends inside a record") }
                    let length = Int(UInt32(littleEndian: records.loadUnaligned(fromByteOffset: position, as: UInt32.self)))
                    guard length >= 5, position + length <= committed else {
                        throw Damaged(description: "a record at \(chunk)+\(position) runs past the chunk")
                    }
                    let record = UnsafeRawBufferPointer(rebasing: records[position..<(position + length)])
                    guard let change = try? RecordReader.decode(record) else {
                        throw Damaged(description: "the record at \(chunk)+\(position) is malformed")
                    }
                    try body(change)
                    position += length
                }
            }
            chunk = GlobalAddress(rawValue: try pool.load(at: chunk.advanced(by: Field.next)))
        }
        return chunks
    }

    /// Replays the pool's log into `apply`; a pool without one gets an empty one.
    /// Returns whether the last mount ended cleanly.
    func open(creating: Bool, _ apply: (Change) throws -> Void) throws -> Bool {
        let head = pool.fileSystemLog
        if head.isNull {
            guard creating else { return true }
            chunks = [try newChunk()]
            pool.fileSystemLog = chunks[0]
            return true
        }
        chunks = try walk(from: head, apply)
        committed = Int(try word(chunks.last!, Field.committed))
        return try word(head, Field.clean) == 1
    }

    private func newChunk() throws -> GlobalAddress {
        let chunk = try heap.allocateFilePages(count: chunkPages)
        try pool.withUnsafeMutableBytes(at: chunk, count: MetadataLog.headerSize) {
            _ = $0.initializeMemory(as: UInt8.self, repeating: 0)
        }
        try pool.store(MetadataLog.magic, at: chunk)
        try pool.persist(at: chunk, count: MetadataLog.headerSize)
        return chunk
    }

    /// Makes `change` durable: after this returns, a crash replays it.
    func append(_ change: Change) throws {
        let record = RecordWriter.encode(change)
        try mutex.withLock { try appendLocked(record) }
    }

    private func appendLocked(_ record: [UInt8]) throws {
        guard record.count <= chunkBytes - MetadataLog.headerSize else { throw FileSystemError.tooBig }
        if MetadataLog.headerSize + committed + record.count > chunkBytes {
            let chunk = try spare ?? newChunk()
            spare = try? newChunk()
            try setWord(chunks.last!, Field.next, chunk.rawValue)
            chunks.append(chunk)
            committed = 0
        }
        let tail = chunks.last!
        let at = tail.advanced(by: UInt64(MetadataLog.headerSize + committed))
        // Pool.write persists the record before the committed word covers it.
        try record.withUnsafeBytes { try pool.write(at: at, from: $0) }
        committed += record.count
        bytes += record.count
        try setWord(tail, Field.committed, UInt64(committed))
    }

    /// Replaces the log by one holding `changes` (the current state): the
    /// new chain is whole before one store switches to it; then the old
    /// chain is freed. Killed in between, the next mount frees whichever
    /// chain the pool's word does not name.
    func rewrite(_ changes: [Change]) throws {
        try mutex.withLock {
            let old = (chunks: chunks, committed: committed, bytes: bytes)
            do {
                chunks = [try newChunk()]
                committed = 0
                bytes = 0
                for change in changes { try appendLocked(RecordWriter.encode(change)) }
            } catch {
                // The pool's word still names the old chain: keep appending there.
                for chunk in chunks where !old.chunks.contains(chunk) {
                    try? heap.freeFilePages(at: chunk, count: chunkPages)
                }
                (chunks, committed, bytes) = old
                retryAt = bytes + bytes / 2
                throw error
            }
            pool.fileSystemLog = chunks[0]
            rewritten = bytes
            for chunk in old.chunks { try? heap.freeFilePages(at: chunk, count: chunkPages) }
        }
    }

    func reserveSpare() throws {
        try mutex.withLock { if spare == nil { spare = try newChunk() } }
    }

    func releaseSpare() {
        mutex.withLock {
            if let spare { try? heap.freeFilePages(at: spare, count: chunkPages) }
            spare = nil
        }
    }

    /// Marks the log as left by an orderly unmount (or not).
    func setClean(_ clean: Bool) {
        mutex.withLock { try? setWord(chunks[0], Field.clean, clean ? 1 : 0) }
    }

    /// The runs the log holds (its chain and its spare).
    var runs: [GlobalAddress] { mutex.withLock { chunks + (spare.map { [$0] } ?? []) } }
}
