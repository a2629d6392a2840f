#if canImport(Glibc)
import Glibc
#endif

/// A pool's identity: a random 128-bit value written into every shelf.
public struct PoolUUID: Hashable, Sendable, CustomStringConvertible {
    let high: UInt64
    let low: UInt64

    static func random() -> PoolUUID {
        var generator = SystemRandomNumberGenerator()
        return PoolUUID(high: generator.next(), low: generator.next())
    }

    public var description: String {
        let hex = String(high, radix: 16).leftPadded(16) + String(low, radix: 16).leftPadded(16)
        let chars = Array(hex)
        let groups = [0..<8, 8..<12, 12..<16, 16..<20, 20..<32]
        return groups.map { String(chars[$0]) }.joined(separator: "-")
    }
}

extension String {
    func leftPadded(_ width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}

/// One published row of the shelf table.
struct ShelfRecord: Equatable, Sendable {
    let size: UInt64
    let medium: Medium
}

/// What shelf 0 says about the pool, read and checked.
struct Superblock: Sendable {
    let uuid: PoolUUID
    let pageSize: UInt64
    let name: String
    let createdAt: UInt64
    let placement: Placement?

    /// Writes the superblock and shelf 0's header into a fresh shelf-0 file.
    static func format(_ file: MappedFile, uuid: PoolUUID, pageSize: UInt64, name: String, placement: Placement?) {
        let base = Layout.Superblock.offset
        file.store(Layout.superMagic, at: base + Layout.Superblock.magic)
        file.store(Layout.formatVersion, at: base + Layout.Superblock.version)
        file.store(uuid.high, at: base + Layout.Superblock.uuid)
        file.store(uuid.low, at: base + Layout.Superblock.uuid + 8)
        file.store(pageSize, at: base + Layout.Superblock.pageSize)
        file.store(UInt64(time(nil)), at: base + Layout.Superblock.createdAt)
        file.storeText(name, at: base + Layout.Superblock.name, capacity: Layout.Superblock.nameCapacity)
        file.storeText(placement?.description ?? "", at: base + Layout.Superblock.placement, capacity: Layout.Superblock.placementCapacity)
        file.store(Checksum.of(file, offset: base, count: Layout.Superblock.checksummed), at: base + Layout.Superblock.checksum)
    }

    /// Reads and checks shelf 0's superblock.
    static func read(_ file: MappedFile) throws -> Superblock {
        let base = Layout.Superblock.offset
        guard file.load(UInt64.self, at: base + Layout.Superblock.magic) == Layout.superMagic else {
            throw PoolError.damaged(path: file.path, reason: "bad superblock magic (not a poolfs pool)")
        }
        let version = file.load(UInt32.self, at: base + Layout.Superblock.version)
        guard version <= Layout.formatVersion else {
            throw PoolError.newerVersion(path: file.path, found: version, supported: Layout.formatVersion)
        }
        guard file.load(UInt64.self, at: base + Layout.Superblock.checksum) == Checksum.of(file, offset: base, count: Layout.Superblock.checksummed) else {
            throw PoolError.damaged(path: file.path, reason: "superblock checksum mismatch")
        }
        let pageSize = file.load(UInt64.self, at: base + Layout.Superblock.pageSize)
        guard pageSize >= Layout.minimumPageSize, pageSize <= Layout.maximumPageSize,
              pageSize & (pageSize - 1) == 0
        else {
            throw PoolError.damaged(path: file.path, reason: "impossible page size \(pageSize)")
        }
        let name = file.text(at: base + Layout.Superblock.name, capacity: Layout.Superblock.nameCapacity)
        return Superblock(
            uuid: PoolUUID(high: file.load(UInt64.self, at: base + Layout.Superblock.uuid),
                           low: file.load(UInt64.self, at: base + Layout.Superblock.uuid + 8)),
            pageSize: pageSize, name: name,
            createdAt: file.load(UInt64.self, at: base + Layout.Superblock.createdAt),
            placement: Placement(stored: file.text(at: base + Layout.Superblock.placement, capacity: Layout.Superblock.placementCapacity)))
    }
}

/// The header at the start of every shelf file.
enum ShelfHeader {

    static func format(_ file: MappedFile, index: Int, uuid: PoolUUID, size: UInt64,
                       pageSize: UInt64, medium: Medium, reserved: UInt64) {
        file.store(Layout.shelfMagic, at: Layout.ShelfHeader.magic)
        file.store(Layout.formatVersion, at: Layout.ShelfHeader.version)
        file.store(UInt32(index), at: Layout.ShelfHeader.index)
        file.store(uuid.high, at: Layout.ShelfHeader.uuid)
        file.store(uuid.low, at: Layout.ShelfHeader.uuid + 8)
        file.store(size, at: Layout.ShelfHeader.size)
        file.store(pageSize, at: Layout.ShelfHeader.pageSize)
        file.store(medium.code, at: Layout.ShelfHeader.medium)
        file.store(Checksum.of(file, offset: 0, count: Layout.ShelfHeader.checksummed), at: Layout.ShelfHeader.checksum)
        file.store(reserved, at: Layout.ShelfHeader.reservedBytes)
    }

    /// Checks a shelf file's header against what the pool expects of it.
    static func verify(_ file: MappedFile, index: Int, uuid: PoolUUID?, size: UInt64?) throws {
        guard file.length >= Layout.shelfMetadata else {
            throw PoolError.damaged(path: file.path, reason: "truncated to \(file.length) bytes")
        }
        guard file.load(UInt64.self, at: Layout.ShelfHeader.magic) == Layout.shelfMagic else {
            throw PoolError.damaged(path: file.path, reason: "bad magic (not a poolfs shelf)")
        }
        let version = file.load(UInt32.self, at: Layout.ShelfHeader.version)
        guard version <= Layout.formatVersion else {
            throw PoolError.newerVersion(path: file.path, found: version, supported: Layout.formatVersion)
        }
        guard file.load(UInt64.self, at: Layout.ShelfHeader.checksum) == Checksum.of(file, offset: 0, count: Layout.ShelfHeader.checksummed) else {
            throw PoolError.damaged(path: file.path, reason: "shelf header checksum mismatch")
        }
        guard Int(file.load(UInt32.self, at: Layout.ShelfHeader.index)) == index else {
            throw PoolError.damaged(path: file.path, reason: "holds shelf \(file.load(UInt32.self, at: Layout.ShelfHeader.index)), expected shelf \(index)")
        }
        if let uuid {
            let found = PoolUUID(high: file.load(UInt64.self, at: Layout.ShelfHeader.uuid), low: file.load(UInt64.self, at: Layout.ShelfHeader.uuid + 8))
            guard found == uuid else {
                throw PoolError.damaged(path: file.path, reason: "belongs to another pool (\(found))")
            }
        }
        let recorded = file.load(UInt64.self, at: Layout.ShelfHeader.size)
        guard UInt64(file.length) >= recorded else {
            throw PoolError.damaged(path: file.path, reason: "truncated: \(file.length) bytes of \(recorded)")
        }
        if let size, size != recorded {
            throw PoolError.damaged(path: file.path, reason: "is \(recorded) bytes, the shelf table says \(size)")
        }
    }

    static func medium(_ file: MappedFile) -> Medium? { Medium(code: file.load(UInt32.self, at: Layout.ShelfHeader.medium)) }

    /// A restored remote shelf's header made local's.
    static func setMedium(_ file: MappedFile, _ medium: Medium) {
        file.store(medium.code, at: Layout.ShelfHeader.medium)
        file.store(Checksum.of(file, offset: 0, count: Layout.ShelfHeader.checksummed), at: Layout.ShelfHeader.checksum)
    }
}

/// The shelf table in shelf 0. A row is written whole, then made visible by
/// one atomic store of its `published` word: a crash before that store leaves
/// the row invisible, after it leaves it complete.
enum ShelfTable {

    private static func checksum(_ file: MappedFile, index: Int, uuid: PoolUUID) -> UInt64 {
        let row = Layout.ShelfTable.entry(index)
        let size = file.load(UInt64.self, at: row + Layout.ShelfTable.size)
        let medium = file.load(UInt64.self, at: row + Layout.ShelfTable.medium)
        return (size &* 0x9e37_79b9_7f4a_7c15) ^ (medium &* 0xc2b2_ae3d_27d4_eb4f)
            ^ UInt64(index + 1) &* 0x1656_67b1_9e37_79f9 ^ uuid.high ^ uuid.low
    }

    static func publish(_ file: MappedFile, index: Int, record: ShelfRecord, uuid: PoolUUID) {
        let row = Layout.ShelfTable.entry(index)
        file.atomic(at: row + Layout.ShelfTable.published).store(0, ordering: .releasing)
        file.store(record.size, at: row + Layout.ShelfTable.size)
        file.store(UInt64(record.medium.code), at: row + Layout.ShelfTable.medium)
        file.store(checksum(file, index: index, uuid: uuid), at: row + Layout.ShelfTable.checksum)
        file.persist(offset: row, count: Layout.ShelfTable.entrySize)
        file.atomic(at: row + Layout.ShelfTable.published).store(1, ordering: .releasing)
        file.persist(offset: row + Layout.ShelfTable.published, count: 8)
    }

    static func isPublished(_ file: MappedFile, index: Int) -> Bool {
        index < Layout.ShelfTable.capacity && file.atomic(at: Layout.ShelfTable.entry(index) + Layout.ShelfTable.published).load(ordering: .acquiring) == 1
    }

    static func record(_ file: MappedFile, index: Int, uuid: PoolUUID) throws -> ShelfRecord {
        let row = Layout.ShelfTable.entry(index)
        guard file.load(UInt64.self, at: row + Layout.ShelfTable.checksum) == checksum(file, index: index, uuid: uuid),
              let medium = Medium(code: UInt32(truncatingIfNeeded: file.load(UInt64.self, at: row + Layout.ShelfTable.medium)))
        else {
            throw PoolError.damaged(path: file.path, reason: "shelf table row \(index) checksum mismatch")
        }
        return ShelfRecord(size: file.load(UInt64.self, at: row + Layout.ShelfTable.size), medium: medium)
    }

    /// Every published row, in order.
    static func records(_ file: MappedFile, uuid: PoolUUID) throws -> [ShelfRecord] {
        var records: [ShelfRecord] = []
        while isPublished(file, index: records.count) {
            records.append(try record(file, index: records.count, uuid: uuid))
        }
        guard !records.isEmpty else {
            throw PoolError.damaged(path: file.path, reason: "the shelf table is empty")
        }
        return records
    }
}
