import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// One record of the metadata log: a change of the file system that is
/// whole or absent after a crash. The same `apply` makes it happen live and
/// on replay.
enum Change: Sendable {
    /// An inode's whole state (snapshots); no names change.
    case inode(InodeRecord)
    /// A name in a directory (snapshots); no counts or times change.
    case entry(parent: UInt64, name: FileName, inode: UInt64)
    /// A new inode under `name` in `parent`.
    case create(parent: UInt64, name: FileName, InodeRecord)
    case link(parent: UInt64, name: FileName, inode: UInt64, time: Timestamp)
    case unlink(parent: UInt64, name: FileName, time: Timestamp)
    /// With `whiteout` (RENAME_WHITEOUT), that new inode takes `name`'s place in `from`.
    case rename(from: UInt64, name: FileName, to: UInt64, newName: FileName, exchange: Bool, time: Timestamp,
                whiteout: InodeRecord? = nil)
    case setAttributes(inode: UInt64, AttributeChange)
    /// Size and modification time after writes.
    case written(inode: UInt64, size: UInt64, time: Timestamp)
    /// Pages (or a fragment) of the file: they replace what the file had
    /// under them (a copy of shared pages, a clone's pages); at page 0 they
    /// replace the file's fragment, if it has one, and a fragment replaces
    /// the file's only page.
    case extent(inode: UInt64, Extent)
    /// Frees file pages `from ..< to`: runs inside go, a run across an end
    /// keeps its pieces outside.
    case punch(inode: UInt64, from: UInt64, to: UInt64, time: Timestamp)
    case setXattr(inode: UInt64, name: FileName, value: [UInt8], time: Timestamp)
    case removeXattr(inode: UInt64, name: FileName, time: Timestamp)
    case setHeap(inode: UInt64, heap: Int, time: Timestamp)
    /// An unlinked inode's last close.
    case drop(inode: UInt64)
    /// Whether the pages of the file's last run past its size were taken
    /// ahead of its appends (FileSystem+Allocation.swift): a mount gives back
    /// those that a kill kept from the file's last close.
    case ahead(inode: UInt64, taken: Bool)
    /// Snapshot `name` of the tree as it is here: its inodes are copies of
    /// every inode the root reaches, numbered from `first` in the order of
    /// a walk of the tree (FileSystem+Snapshots.swift), made again on replay.
    case snapshot(name: FileName, first: UInt64)
    /// Snapshot `name` and all its inodes go.
    case dropSnapshot(name: FileName)
}

extension Change {
    /// Whether it changes a snapshot's inode, which refuses every change
    /// (FileSystem+Snapshots.swift). Checked on every record: no array.
    var changesSnapshot: Bool {
        switch self {
        case .inode(let record): FileSystem.isFrozen(record.number)
        case let .entry(parent, _, _), let .create(parent, _, _), let .unlink(parent, _, _): FileSystem.isFrozen(parent)
        case let .link(parent, _, inode, _): FileSystem.isFrozen(parent) || FileSystem.isFrozen(inode)
        case let .rename(from, _, to, _, _, _, _): FileSystem.isFrozen(from) || FileSystem.isFrozen(to)
        case let .setAttributes(inode, _), let .written(inode, _, _), let .extent(inode, _), let .punch(inode, _, _, _),
             let .setXattr(inode, _, _, _), let .removeXattr(inode, _, _), let .setHeap(inode, _, _), let .drop(inode),
             let .ahead(inode, _): FileSystem.isFrozen(inode)
        // Made and dropped only through FileSystem+Snapshots.swift.
        case .snapshot, .dropSnapshot: false
        }
    }

    /// Whether the change removes (or gives back) rather than adds: these
    /// may use the log's reserve on a full pool (MetadataLog.swift).
    var makesRoom: Bool {
        switch self {
        case .unlink, .punch, .drop, .removeXattr, .dropSnapshot: true
        case .rename(_, _, _, _, _, _, let whiteout): whiteout == nil
        case .setAttributes(_, let change): change.size == 0
        case .ahead(_, let taken): !taken
        default: false
        }
    }
}

/// The fields setattr changes; nil leaves one as it is.
public struct AttributeChange: Sendable {
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var size: UInt64?
    public var atime: Timestamp?
    public var mtime: Timestamp?
    public var ctime: Timestamp

    public init(mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, size: UInt64? = nil,
                atime: Timestamp? = nil, mtime: Timestamp? = nil, ctime: Timestamp = .now()) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.atime = atime
        self.mtime = mtime
        self.ctime = ctime
    }
}

// MARK: Encoding

/// Little-endian bytes of one record: [u32 length][u8 kind | 0x80][fields]
/// [u32 CRC-32C of all before it]. Records of the first format (pools
/// written before checksums) have the kind's top bit clear and no CRC.
struct RecordWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    mutating func time(_ t: Timestamp) { i64(t.seconds); i64(t.nanoseconds) }
    mutating func data(_ v: [UInt8]) { u32(UInt32(v.count)); bytes.append(contentsOf: v) }
    mutating func name(_ v: FileName) { data(v.bytes) }
    mutating func optional(_ v: UInt64?) { u8(v == nil ? 0 : 1); u64(v ?? 0) }
    mutating func optional(_ t: Timestamp?) { u8(t == nil ? 0 : 1); time(t ?? Timestamp(seconds: 0, nanoseconds: 0)) }

    mutating func inode(_ r: InodeRecord) {
        u64(r.number); u32(r.mode); u32(r.uid); u32(r.gid); u32(r.nlink); u64(r.rdev); u64(r.size)
        time(r.atime); time(r.mtime); time(r.ctime); u32(UInt32(r.heap)); u64(r.parent); data(r.target)
    }

    static func encode(_ change: Change) -> [UInt8] {
        var w = RecordWriter()
        w.bytes.reserveCapacity(96)
        w.u32(0)
        switch change {
        case .inode(let r): w.u8(1); w.inode(r)
        case let .entry(parent, name, inode): w.u8(2); w.u64(parent); w.name(name); w.u64(inode)
        case let .create(parent, name, r): w.u8(3); w.u64(parent); w.name(name); w.inode(r)
        case let .link(parent, name, inode, time): w.u8(4); w.u64(parent); w.name(name); w.u64(inode); w.time(time)
        case let .unlink(parent, name, time): w.u8(5); w.u64(parent); w.name(name); w.time(time)
        case let .rename(from, name, to, newName, exchange, time, whiteout):
            w.u8(whiteout == nil ? 6 : 17)
            w.u64(from); w.name(name); w.u64(to); w.name(newName); w.u8(exchange ? 1 : 0); w.time(time)
            if let whiteout { w.inode(whiteout) }
        case let .setAttributes(inode, c):
            w.u8(7); w.u64(inode)
            w.optional(c.mode.map(UInt64.init)); w.optional(c.uid.map(UInt64.init)); w.optional(c.gid.map(UInt64.init))
            w.optional(c.size); w.optional(c.atime); w.optional(c.mtime); w.time(c.ctime)
        case let .written(inode, size, time): w.u8(8); w.u64(inode); w.u64(size); w.time(time)
        case let .extent(inode, e) where e.isFragment:
            w.u8(15); w.u64(inode); w.u64(e.address.rawValue); w.u32(UInt32(e.fragmentBytes))
        case let .extent(inode, e): w.u8(9); w.u64(inode); w.u64(e.page); w.u64(e.address.rawValue); w.u64(UInt64(e.pages))
        case let .punch(inode, from, to, time): w.u8(10); w.u64(inode); w.u64(from); w.u64(to); w.time(time)
        case let .setXattr(inode, name, value, time): w.u8(11); w.u64(inode); w.name(name); w.data(value); w.time(time)
        case let .removeXattr(inode, name, time): w.u8(12); w.u64(inode); w.name(name); w.time(time)
        case let .setHeap(inode, heap, time): w.u8(13); w.u64(inode); w.u32(UInt32(heap)); w.time(time)
        case let .drop(inode): w.u8(14); w.u64(inode)
        case let .ahead(inode, taken): w.u8(16); w.u64(inode); w.u8(taken ? 1 : 0)
        case let .snapshot(name, first): w.u8(18); w.name(name); w.u64(first)
        case let .dropSnapshot(name): w.u8(19); w.name(name)
        }
        w.bytes[4] |= RecordReader.checked
        let length = UInt32(w.bytes.count + 4).littleEndian
        withUnsafeBytes(of: length) { w.bytes.replaceSubrange(0..<4, with: $0) }
        w.u32(w.bytes.withUnsafeBytes { CRC32C.checksum($0) })
        return w.bytes
    }
}

/// Reads one record back, checking its CRC and that every field is one
/// the file system could have written: a pool is input, and a value that
/// passes here is safe to use in arithmetic and as an index.
struct RecordReader {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// The kind's top bit: the record ends in its CRC.
    static let checked: UInt8 = 0x80

    struct Malformed: Error {
        var reason = "malformed"
    }

    /// Throws unless `condition` holds of a value read.
    func require(_ condition: Bool, _ reason: @autoclosure () -> String = "a field out of range") throws {
        if !condition { throw Malformed(reason: reason()) }
    }

    mutating func take(_ count: Int) throws -> UnsafeRawBufferPointer {
        guard count >= 0, position + count <= bytes.count else { throw Malformed() }
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + count)])
    }

    mutating func u8() throws -> UInt8 { try take(1)[0] }
    mutating func u32() throws -> UInt32 { UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self)) }
    mutating func u64() throws -> UInt64 { UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self)) }
    mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
    mutating func time() throws -> Timestamp {
        let time = Timestamp(seconds: try i64(), nanoseconds: try i64())
        try require((0..<1_000_000_000).contains(time.nanoseconds), "a time with \(time.nanoseconds) ns")
        return time
    }
    mutating func data() throws -> [UInt8] { Array(try take(Int(try u32()))) }
    /// A name in a directory, or an xattr's.
    mutating func name() throws -> FileName {
        let name = FileName(try data())
        try require((1...FileSystem.maximumNameLength).contains(name.count) && !name.bytes.contains(0), "a name of \(name.count) bytes")
        return name
    }
    mutating func size() throws -> UInt64 {
        let size = try u64()
        try require(size <= FileSystem.maximumFileSize, "a size of \(size) bytes")
        return size
    }
    /// A file page: below the largest file's last page of the smallest page size.
    mutating func page() throws -> UInt64 {
        let page = try u64()
        try require(page <= FileSystem.maximumFileSize >> 12, "file page \(page)")
        return page
    }
    mutating func optional() throws -> UInt64? { let present = try u8(); let v = try u64(); return present == 0 ? nil : v }
    /// An absent time is written as zeros, which `time()` takes too.
    mutating func optionalTime() throws -> Timestamp? { let present = try u8(); let t = try time(); return present == 0 ? nil : t }

    mutating func inode() throws -> InodeRecord {
        let record = InodeRecord(number: try u64(), mode: try u32(), uid: try u32(), gid: try u32(), nlink: try u32(),
                                 rdev: try u64(), size: try size(), atime: try time(), mtime: try time(), ctime: try time(),
                                 heap: Int(try u32()), parent: try u64(), target: try data())
        try require(record.number >= FileSystem.rootInode && record.number < 1 << 62, "inode number \(record.number)")
        try require(record.mode & ~(S_IFMT | 0o7777) == 0
                    && [S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK].contains(record.mode & S_IFMT),
                    "mode \(String(record.mode, radix: 8))")
        try require(record.nlink < UInt32(Int32.max) && record.target.count < 4096 && record.heap < 1 << 16)
        return record
    }

    /// The change in `bytes`, which hold exactly one record. `unchecked`:
    /// a record of the first format, without a CRC, is taken too.
    static func decode(_ bytes: UnsafeRawBufferPointer, unchecked: Bool = false) throws -> Change {
        guard bytes.count >= 5 else { throw Malformed(reason: "a record of \(bytes.count) bytes") }
        var kind = bytes[4]
        var body = bytes
        if kind & checked != 0 {
            guard bytes.count >= 9 else { throw Malformed(reason: "a record of \(bytes.count) bytes") }
            body = UnsafeRawBufferPointer(rebasing: bytes[..<(bytes.count - 4)])
            let stored = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: bytes.count - 4, as: UInt32.self))
            guard CRC32C.checksum(body) == stored else { throw Malformed(reason: "its checksum does not match") }
            kind &= ~checked
        } else if !unchecked {
            throw Malformed(reason: "it has no checksum")
        }
        var r = RecordReader(body)
        r.position = 5
        let change: Change
        switch kind {
        case 1: change = .inode(try r.inode())
        case 2: change = .entry(parent: try r.u64(), name: try r.name(), inode: try r.u64())
        case 3: change = .create(parent: try r.u64(), name: try r.name(), try r.inode())
        case 4: change = .link(parent: try r.u64(), name: try r.name(), inode: try r.u64(), time: try r.time())
        case 5: change = .unlink(parent: try r.u64(), name: try r.name(), time: try r.time())
        case let kind where kind == 6 || kind == 17:
            change = .rename(from: try r.u64(), name: try r.name(), to: try r.u64(), newName: try r.name(),
                             exchange: try r.u8() != 0, time: try r.time(), whiteout: kind == 17 ? try r.inode() : nil)
        case 7:
            let inode = try r.u64()
            let mode = try r.optional(), uid = try r.optional(), gid = try r.optional(), size = try r.optional()
            // A mode may carry its type bits (setattr passes st_mode whole); apply keeps 0o7777.
            try r.require((mode ?? 0) <= UInt32.max && (uid ?? 0) <= UInt32.max && (gid ?? 0) <= UInt32.max
                          && (size ?? 0) <= FileSystem.maximumFileSize)
            let c = AttributeChange(mode: mode.map { UInt32($0) }, uid: uid.map { UInt32($0) }, gid: gid.map { UInt32($0) },
                                    size: size, atime: try r.optionalTime(), mtime: try r.optionalTime(), ctime: try r.time())
            change = .setAttributes(inode: inode, c)
        case 8: change = .written(inode: try r.u64(), size: try r.size(), time: try r.time())
        case 9:
            let inode = try r.u64(), page = try r.page(), address = GlobalAddress(rawValue: try r.u64()), pages = try r.u64()
            try r.require(pages >= 1 && pages <= FileSystem.maximumFileSize >> 12 + 1 - page && !address.isNull,
                          "a run of \(pages) pages at file page \(page)")
            change = .extent(inode: inode, Extent(page: page, address: address, pages: Int(pages)))
        case 10:
            let inode = try r.u64(), from = try r.page(), to = try r.u64()
            try r.require(from <= to, "a punch of pages \(from) to \(to)")
            change = .punch(inode: inode, from: from, to: to, time: try r.time())
        case 11:
            let inode = try r.u64(), name = try r.name(), value = try r.data()
            try r.require(value.count <= FileSystem.maximumXattrValue, "an xattr of \(value.count) bytes")
            change = .setXattr(inode: inode, name: name, value: value, time: try r.time())
        case 12: change = .removeXattr(inode: try r.u64(), name: try r.name(), time: try r.time())
        case 13: change = .setHeap(inode: try r.u64(), heap: Int(try r.u32()), time: try r.time())
        case 14: change = .drop(inode: try r.u64())
        case 15:
            let inode = try r.u64(), address = GlobalAddress(rawValue: try r.u64()), bytes = Int(try r.u32())
            // Whole slots, in a run of at most 64 (FragmentRuns.swift).
            let slot = FragmentRuns.smallestSlot
            try r.require(bytes > 0 && bytes % slot == 0 && address.offset % UInt64(slot) == 0 && !address.isNull,
                          "a fragment of \(bytes) bytes at \(address)")
            change = .extent(inode: inode, .fragment(address, bytes: bytes))
        case 16: change = .ahead(inode: try r.u64(), taken: try r.u8() != 0)
        case 18:
            let name = try r.name(), first = try r.u64()
            try r.require(FileSystem.isFrozen(first) && first > FileSystem.snapshotHome, "a snapshot numbered from \(first)")
            change = .snapshot(name: name, first: first)
        case 19: change = .dropSnapshot(name: try r.name())
        default: throw Malformed(reason: "its kind \(kind) is unknown")
        }
        try r.require(r.position == body.count, "its length does not match its fields")
        return change
    }
}
