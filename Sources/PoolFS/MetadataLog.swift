import PoolCore

/// The file system's metadata, durable in the pool: a chain of chunks of
/// records. A record counts once the chunk's `committed` word covers it (one
/// 8-byte store, after the record's bytes), so a mount killed at any instant
/// leaves each change whole or absent. A mount replays the chain, then
/// writes a fresh one holding just the current state and switches to it with
/// one store of the pool's `rootAddress` word.
///
/// Chunk: magic, next chunk, committed bytes, clean flag (first chunk only),
/// the chain's id, a check of `next`, then records. Chunks are the file
/// system's own page runs, of `heap`.
///
/// The second format (PFSLOG02) makes damage found, not believed: each
/// record ends in a CRC-32C (Change.swift); the committed word holds its
/// count and the count's complement in one 8-byte store; `next` has a
/// check word, stored before it; every chunk of a chain carries the
/// chain's random id, so a damaged `next` that lands on a chunk of an old
/// chain is told apart. Chunks of the first format (PFSLOG01) are still
/// read, their records without a CRC; a mount rewrites them.
final class MetadataLog: @unchecked Sendable {
    static let firstMagic: UInt64 = 0x3130_474f_4c53_4650   // "PFSLOG01"
    static let magic: UInt64 = 0x3230_474f_4c53_4650        // "PFSLOG02"
    static let headerSize = 64
    enum Field {
        static let magic: UInt64 = 0, next: UInt64 = 8, committed: UInt64 = 16, clean: UInt64 = 24
        static let chain: UInt64 = 32, nextCheck: UInt64 = 40
    }

    /// The committed word: the count, and its complement above it.
    static func committedWord(_ count: Int) -> UInt64 { UInt64(UInt32(count)) | UInt64(~UInt32(count)) << 32 }

    /// The count a committed word holds; nil if it is neither a checked
    /// word nor, in a chunk of the first format, a plain count.
    static func committedCount(_ word: UInt64, firstFormat: Bool) -> Int? {
        if word >> 32 == UInt64(~UInt32(truncatingIfNeeded: word)) { return Int(UInt32(truncatingIfNeeded: word)) }
        return firstFormat && word >> 32 == 0 ? Int(word) : nil
    }

    static func nextCheck(_ next: UInt64) -> UInt64 { ~next &* 0x9E37_79B9_7F4A_7C15 }

    let pool: Pool
    let heap: Heap
    let chunkPages: Int
    var chunkBytes: Int { chunkPages * pool.pageSize }

    /// The chain being appended to; `mutex`.
    private(set) var chunks: [GlobalAddress] = []
    /// The id its chunks carry; `mutex`.
    private var chain: UInt64 = 0
    private var committed = 0
    /// Chunks kept in hand so that a full pool can still log the changes
    /// that make room (unlink, rmdir, rename, truncate to zero, …), as ext4
    /// and btrfs keep a reserve for deletes: enough for a record removing
    /// each name and xattr the file system has, and one more. Only those
    /// changes dip into it; every other change first makes it whole, or
    /// fails with ENOSPC; `mutex`.
    private var spares: [GlobalAddress] = []
    /// What the records removing every name and xattr would take
    /// (FileSystem+Apply.swift keeps it); `mutex`.
    private var removalBytes = 0
    private var bytes = 0
    /// Bytes the last rewrite wrote: the state's own size.
    private var rewritten = 0

    /// After a rewrite failed (a full pool), the next try waits until the
    /// log has grown this far.
    private var retryAt = 0

    /// Whether the log has grown well past the state it holds, or (on a
    /// full pool) removals have used its reserve and a rewrite would give
    /// back what the removed names' records took.
    var needsRewrite: Bool {
        mutex.withLock {
            bytes > max(64 << 20, 4 * rewritten, retryAt)
                || (spares.count < sparesNeeded && bytes > max(2 * rewritten, retryAt))
        }
    }

    /// An unlink (or removexattr) record naming `name`, at most.
    static func removalCost(_ name: FileName) -> Int { 48 + name.count }

    func noteRemovals(_ delta: Int) { mutex.withLock { removalBytes = max(0, removalBytes + delta) } }

    /// The reserve; `mutex`.
    private var sparesNeeded: Int {
        let payload = chunkBytes - MetadataLog.headerSize
        // Room for one more record of the longest name beyond what there
        // is, and a chunk for the rewrite that gives back what they took.
        return (removalBytes + 512 + payload - 1) / payload + 1
    }

    /// Makes the reserve whole, and `extra` chunks beyond it; `mutex`.
    private func keepSpares(extra: Int = 0) throws {
        do {
            while spares.count < sparesNeeded + extra { spares.append(try newChunk()) }
        } catch PoolError.poolFull {
            throw FileSystemError.noSpace
        }
    }
    private let mutex = ThreadMutex()

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
        var chainID: UInt64?
        while !chunk.isNull {
            guard seen.insert(chunk).inserted else { throw Damaged(description: "its chain loops at \(chunk)") }
            let magic = try? pool.load(at: chunk)
            guard magic == MetadataLog.magic || magic == MetadataLog.firstMagic else {
                throw Damaged(description: "chunk \(chunk) has no log header")
            }
            let firstFormat = magic == MetadataLog.firstMagic
            let id = try word(chunk, Field.chain)
            guard chainID == nil || id == chainID else {
                throw Damaged(description: "chunk \(chunk) belongs to another chain than the chunk before it")
            }
            chainID = id
            let committedWord = try word(chunk, Field.committed)
            guard let committed = MetadataLog.committedCount(committedWord, firstFormat: firstFormat),
                  committed <= chunkLimit - MetadataLog.headerSize else {
                throw Damaged(description: "chunk \(chunk) has a damaged committed count (0x\(String(committedWord, radix: 16)))")
            }
            chunks.append(chunk)
            try pool.withUnsafeMutableBytes(at: chunk.advanced(by: UInt64(MetadataLog.headerSize)), count: committed) { records -> Void in
                var position = 0
                while position < committed {
                    guard committed - position >= 5 else { throw Damaged(description: "chunk \(chunk) ends inside a record") }
                    let length = Int(UInt32(littleEndian: records.loadUnaligned(fromByteOffset: position, as: UInt32.self)))
                    guard length >= 5, length <= committed - position else {
                        throw Damaged(description: "a record at \(chunk)+\(position) runs past the chunk")
                    }
                    let record = UnsafeRawBufferPointer(rebasing: records[position..<(position + length)])
                    let change: Change
                    do {
                        change = try RecordReader.decode(record, unchecked: firstFormat)
                    } catch let malformed as RecordReader.Malformed {
                        throw Damaged(description: "the record at \(chunk)+\(position) is damaged: \(malformed.reason)")
                    }
                    try body(change)
                    position += length
                }
            }
            let next = try word(chunk, Field.next)
            if next != 0, !firstFormat, try word(chunk, Field.nextCheck) != MetadataLog.nextCheck(next) {
                throw Damaged(description: "chunk \(chunk) has a damaged link to the next (\(GlobalAddress(rawValue: next)))")
            }
            chunk = GlobalAddress(rawValue: next)
        }
        return chunks
    }

    /// Replays the pool's log into `apply`; a pool without one gets an empty one.
    /// Returns whether the last mount ended cleanly.
    func open(creating: Bool, _ apply: (Change) throws -> Void) throws -> Bool {
        let head = pool.rootAddress
        if head.isNull {
            guard creating else { return true }
            chain = UInt64.random(in: 1...UInt64.max)
            chunks = [try newChunk()]
            try pool.setRootAddress(chunks[0])
            return true
        }
        chunks = try walk(from: head, apply)
        chain = try word(head, Field.chain)
        let tail = chunks.last!
        committed = MetadataLog.committedCount(try word(tail, Field.committed),
                                               firstFormat: try pool.load(at: tail) == MetadataLog.firstMagic) ?? 0
        return try word(head, Field.clean) == 1
    }

    private func newChunk() throws -> GlobalAddress {
        let chunk = try heap.allocateTrackedPages(count: chunkPages)
        try clearHeader(chunk)
        return chunk
    }

    /// An empty chunk of the current chain: no records, no next.
    private func clearHeader(_ chunk: GlobalAddress) throws {
        try pool.withUnsafeMutableBytes(at: chunk, count: MetadataLog.headerSize) {
            _ = $0.initializeMemory(as: UInt8.self, repeating: 0)
        }
        try pool.store(MetadataLog.magic, at: chunk)
        try pool.store(chain, at: chunk.advanced(by: Field.chain))
        try pool.store(MetadataLog.committedWord(0), at: chunk.advanced(by: Field.committed))
        try pool.persist(at: chunk, count: MetadataLog.headerSize)
    }

    /// Makes `change` durable: after this returns, a crash replays it.
    func append(_ change: Change) throws {
        let record = RecordWriter.encode(change)
        try mutex.withLock {
            if !change.makesRoom {
                let startsChunk = MetadataLog.headerSize + committed + record.count > chunkBytes
                try keepSpares(extra: startsChunk ? 1 : 0)
            }
            try appendLocked(record)
        }
    }

    private func appendLocked(_ record: [UInt8]) throws {
        guard record.count <= chunkBytes - MetadataLog.headerSize else { throw FileSystemError.tooBig }
        if MetadataLog.headerSize + committed + record.count > chunkBytes {
            // A spare was made for the chain of its time: it joins this one.
            let chunk = try spares.popLast() ?? newChunk()
            try setWord(chunk, Field.chain, chain)
            try setWord(chunks.last!, Field.nextCheck, MetadataLog.nextCheck(chunk.rawValue))
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
        try setWord(tail, Field.committed, MetadataLog.committedWord(committed))
    }

    /// Replaces the log by one holding `changes` (the current state): the
    /// new chain is whole before one store switches to it; then the old
    /// chain is freed. Killed in between, the next mount frees whichever
    /// chain the pool's word does not name.
    func rewrite(_ changes: [Change]) throws {
        try mutex.withLock {
            let old = (chunks: chunks, committed: committed, bytes: bytes, chain: chain)
            do {
                chain = UInt64.random(in: 1...UInt64.max)
                // From the reserve first: a full pool has no other room.
                let first = try spares.popLast() ?? newChunk()
                try setWord(first, Field.chain, chain)
                chunks = [first]
                committed = 0
                bytes = 0
                for change in changes { try appendLocked(RecordWriter.encode(change)) }
            } catch {
                // The pool's word still names the old chain: keep appending
                // there; the new chain's chunks go back to the reserve, their
                // headers as new (records and a link of a chain never named).
                for chunk in chunks where !old.chunks.contains(chunk) {
                    if (try? clearHeader(chunk)) != nil { spares.append(chunk) } else { try? heap.freeTrackedPages(at: chunk, count: chunkPages) }
                }
                (chunks, committed, bytes, chain) = old
                retryAt = bytes + bytes / 2
                throw error
            }
            try pool.setRootAddress(chunks[0])
            rewritten = bytes
            for chunk in old.chunks { try? heap.freeTrackedPages(at: chunk, count: chunkPages) }
        }
    }

    /// After a checkpoint's restore: the chain as the image took it is
    /// left (its chunks are runs no one names, which the restore frees);
    /// the next rewrite starts the log afresh.
    func forgetChain() {
        mutex.withLock {
            chunks = []
            committed = 0
            bytes = 0
        }
    }

    /// Before a write that grows a file: the reserve whole (its records
    /// are not removals: they refill what they take).
    func reserveSpares() throws {
        try mutex.withLock { try keepSpares() }
    }

    /// At unmount: the next mount makes its own reserve.
    func releaseSpares() {
        mutex.withLock {
            for spare in spares { try? heap.freeTrackedPages(at: spare, count: chunkPages) }
            spares = []
        }
    }

    /// Marks the log as left by an orderly unmount (or not).
    func setClean(_ clean: Bool) {
        mutex.withLock { try? setWord(chunks[0], Field.clean, clean ? 1 : 0) }
    }

    /// The runs the log holds (its chain and its reserve).
    var runs: [GlobalAddress] { mutex.withLock { chunks + spares } }
}
