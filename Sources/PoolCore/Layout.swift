/// Where everything lives inside the shelf files.
///
/// Every shelf file starts with a `ShelfHeader` (offset 0), then its page
/// table (one `PageEntry` word per data page: the truth about which pages are
/// free, cached by a process or allocated), then a bitmap of the pages that
/// are not free (derived from the page table, rebuilt after a crash), then
/// the data pages, aligned to the page size. Shelf 0 also holds, before its
/// page table, the pool's own metadata: superblock, shelf table, control
/// words, participant slots and the region table.
enum Layout {
    static let formatVersion: UInt32 = 1
    static let shelfMagic: UInt64 = 0x0046_4c45_4853_4650       // "PFSHELF\0"
    static let superMagic: UInt64 = 0x4253_5346_4c4f_4f50       // "POOLFSSB"

    // Shelf header, at offset 0 of every shelf.
    enum ShelfHeader {
        static let magic = 0, version = 8, index = 12, uuid = 16, size = 32, pageSize = 40
        static let medium = 48, checksum = 56
        static let checksummed = 56
        /// Bytes at the start of the file whose blocks are allocated (mutable).
        static let reservedBytes = 64
        /// The lowest offset whose blocks were ever given back (0: none);
        /// runs past it may lie over holes (mutable, global lock).
        static let givenBackFrom = 72
    }

    // Superblock, shelf 0.
    enum Superblock {
        static let offset = 4096
        static let magic = 0, version = 8, uuid = 16, pageSize = 32, createdAt = 40
        static let name = 48, nameCapacity = 64
        /// The pool's default placement, as text; empty for none.
        static let placement = 112, placementCapacity = 64
        static let checksum = 248, checksummed = 248
    }

    // Shelf table, shelf 0: one entry per shelf, published by one atomic store.
    enum ShelfTable {
        static let offset = 4096 + 256
        static let capacity = 64
        static let entrySize = 64
        static let size = 0, medium = 8, checksum = 16, published = 24
        static func entry(_ index: Int) -> Int { offset + index * entrySize }
    }

    // Control words, shelf 0.
    enum Control {
        static let offset = 16384
        /// Nonzero while a holder of the global lock is changing shared state;
        /// found nonzero by the next holder, it means the last one died inside.
        static let lockDirty = offset
        static let lockHolder = offset + 8
        /// The pool's global epoch, for delayed frees.
        static let epoch = offset + 16
        /// Delayed frees so far; every 64th tries to advance the epoch.
        static let delayedPushes = offset + 24
        /// The pid of the process that holds the pool exclusively (the mount).
        static let exclusiveHolder = offset + 32
        /// The client's root address (Pool.rootAddress): where the file
        /// system's metadata log starts.
        static let rootAddress = offset + 40
        /// A freeze's state (OpenPool+Freeze), a futex word: its generation
        /// times four plus its phase.
        static let freeze = offset + 64
        /// The pid of the process freezing the pool (its lock byte says if it lives).
        static let freezer = offset + 72
    }

    // Participant slots, shelf 0: one per process that has the pool open.
    // A process's threads each use one *lane* of its slot (lane 0 is shared
    // by the threads beyond the others): an intent log and an epoch word.
    enum Participants {
        static let offset = 32768
        static let capacity = 128
        static let slotSize = 2048
        static let state = 0, pid = 8, openedAt = 16
        static let lanes = 32
        /// Intent records for operations that must finish or roll back if the
        /// process dies in the middle, one per lane.
        static let logsOffset = 64, logSize = 32
        static let logOperation = 0, logDestination = 8, logAddress = 16, logCount = 24
        /// Epoch words, one per lane: 0 outside an epoch, else epoch + 1.
        static let epochsOffset = logsOffset + lanes * logSize
        /// The last freeze generation the process protected its shelves for
        /// (a futex word, the freezer waits on it), and why it could not.
        static let frozen = 1536, freezeError = 1540
        static func slot(_ index: Int) -> Int { offset + index * slotSize }
        static func log(_ slot: Int, _ lane: Int) -> Int {
            Participants.slot(slot) + logsOffset + lane * logSize
        }
        static func epoch(_ slot: Int, _ lane: Int) -> Int {
            Participants.slot(slot) + epochsOffset + lane * 8
        }
    }

    // Region table, shelf 0.
    enum Regions {
        static let offset = Participants.offset + Participants.capacity * Participants.slotSize
        static let capacity = 1024
        static let entrySize = 128
        static let state = 0, address = 8, size = 16, pages = 24, createdAt = 32
        static let name = 48, nameCapacity = 64
        /// Owner and permission bits (u32 each); a mode of 0 is a row
        /// written before regions had them: root's, 0600.
        static let uid = 112, gid = 116, mode = 120
        static func entry(_ index: Int) -> Int { offset + index * entrySize }
    }

    // Heap table, shelf 0.
    enum Heaps {
        static let offset = Regions.offset + Regions.capacity * Regions.entrySize
        static let capacity = 64
        static let rowSize = 1024
        static let state = 0, createdAt = 8, name = 16, nameCapacity = 64
        static let policy = 80, policyCapacity = 64
        /// Three stacks of blocks waiting for their epoch to pass.
        static let delayed = 144
        /// One stack per size class of spans no live thread owns.
        static let abandoned = 256
        static func row(_ index: Int) -> Int { offset + index * rowSize }
    }

    /// Shelf 0's fixed metadata.
    static let shelf0Metadata = 512 * 1024
    static let shelfMetadata = 4096

    /// Bytes (beyond any file size) that carry file locks on shelf 0.
    enum LockByte {
        static let base: UInt64 = 1 << 40
        /// Shared by every process that has the pool open; exclusive means alone.
        static let openers = base
        static let global = base + 1
        /// Held by the one process that holds the pool exclusively (the mount).
        static let exclusive = base + 2
        /// Held by the process freezing the pool, while it does.
        static let freezer = base + 3
        static func participant(_ slot: Int) -> UInt64 { base + 1024 + UInt64(slot) }
    }

    static let minimumPageSize: UInt64 = 4096
    static let maximumPageSize: UInt64 = 1 << 30
}

/// The geometry of one shelf, computed from its size and the page size alone,
/// so it needs no storage and cannot disagree with itself.
struct ShelfGeometry: Equatable, Sendable {
    let size: UInt64
    let pageSize: UInt64
    let pageCount: Int
    let pageTableOffset: Int
    let bitmapOffset: Int
    let dataOffset: UInt64

    init?(index: Int, size: UInt64, pageSize: UInt64) {
        let fixed = UInt64(index == 0 ? Layout.shelf0Metadata : Layout.shelfMetadata)
        guard size > fixed + pageSize, size / pageSize < ShelfGeometry.maximumPages else { return nil }
        func dataStart(_ pages: UInt64) -> UInt64 {
            let bitmapWords = (pages + 63) / 64
            let end = fixed + pages * 8 + bitmapWords * 8
            return (end + pageSize - 1) / pageSize * pageSize
        }
        var pages = (size - fixed) / (pageSize + 8)
        while pages > 0 && dataStart(pages) + pages * pageSize > size { pages -= 1 }
        guard pages > 0, pages < 1 << 32 else { return nil }
        self.size = size
        self.pageSize = pageSize
        self.pageCount = Int(pages)
        self.pageTableOffset = Int(fixed)
        self.bitmapOffset = Int(fixed + pages * 8)
        self.dataOffset = dataStart(pages)
    }

    /// Page numbers fit the 32 bits a page-table entry gives a run length.
    static let maximumPages: UInt64 = 1 << 32

    var bitmapWords: Int { (pageCount + 63) / 64 }
    var dataBytes: UInt64 { UInt64(pageCount) * pageSize }

    func offset(ofPage page: Int) -> UInt64 { dataOffset + UInt64(page) * pageSize }
}
