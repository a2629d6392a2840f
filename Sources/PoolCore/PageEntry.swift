/// One word of a shelf's page table, describing one data page.
///
/// A run of pages is a *head* entry (allocated or cached, with the run's
/// length) followed by *tail* entries (each with its distance to the head).
/// Invariants, checked by `poolfs check`:
/// - every page is free, a head, or a tail covered by the head before it;
/// - a run moves between allocated and cached by one atomic store or CAS on
///   its head, without the global lock; it becomes free or non-free only under
///   the global lock, tails first when allocating and head first when freeing,
///   so a tail that no head covers is free;
/// - every page of an allocated run has the same owners: a head's `shares`
///   counts those beyond the first (a clone's, a snapshot's), so a run whose
///   pages come to differ is cut where they do (SharedPages.swift).
struct PageEntry: RawRepresentable, Equatable, Sendable {
    var rawValue: UInt64

    init(rawValue: UInt64) { self.rawValue = rawValue }

    enum Kind: UInt64 {
        case free = 0
        /// Handed to a user (page run or region).
        case allocated = 1
        /// Taken from the shared free space by a process, held in one of its
        /// thread caches; reclaimed if that process dies.
        case cached = 2
        case tail = 3
    }

    enum Tag: Equatable, Sendable {
        case pages
        case region(Int)
        /// A span of heap objects (or one large object) of heap N.
        case heap(Int)
        /// A page run handed out by heap N's `allocatePages`.
        case heapPages(Int)
        /// A page run placed by heap N that its client keeps track of itself
        /// (the file system's file data and log). Tagged apart so that after
        /// a crash the client can list every such run (Pool.trackedRuns)
        /// and free those it no longer names.
        case tracked(Int)

        /// The heap whose pages these are, for any heap-owned tag.
        var heap: Int? {
            switch self {
            case .heap(let index), .heapPages(let index), .tracked(let index): index
            case .pages, .region: nil
            }
        }

        /// A heap's whole-page run (not a span of objects).
        var isHeapPageRun: Bool {
            switch self {
            case .heapPages, .tracked: true
            default: false
            }
        }

        var bits: UInt64 {
            switch self {
            case .pages: 0
            case .region(let index): 1 | UInt64(index) << 4
            case .heap(let index): 2 | UInt64(index) << 4
            case .heapPages(let index): 3 | UInt64(index) << 4
            case .tracked(let index): 4 | UInt64(index) << 4
            }
        }

        init?(bits: UInt64) {
            switch bits & 0xf {
            case 0: self = .pages
            case 1: self = .region(Int(bits >> 4))
            case 2: self = .heap(Int(bits >> 4))
            case 3: self = .heapPages(Int(bits >> 4))
            case 4: self = .tracked(Int(bits >> 4))
            default: return nil
            }
        }
    }

    static let free = PageEntry(rawValue: 0)

    static func allocated(length: Int, tag: Tag, shares: Int = 0) -> PageEntry {
        PageEntry(rawValue: Kind.allocated.rawValue | UInt64(shares) << 4 | tag.bits << 16 | UInt64(length) << 32)
    }

    /// Owners beyond the first of an allocated run's pages, kept in the bits
    /// where a cached head keeps the process that holds it.
    var shares: Int { kind == .allocated ? Int(rawValue >> 4 & 0xfff) : 0 }
    static let maximumShares = 0xfff

    static func cached(length: Int, owner: Int) -> PageEntry {
        PageEntry(rawValue: Kind.cached.rawValue | UInt64(owner) << 4 | UInt64(length) << 32)
    }

    static func tail(distance: Int) -> PageEntry {
        PageEntry(rawValue: Kind.tail.rawValue | UInt64(distance) << 32)
    }

    var kind: Kind? { Kind(rawValue: rawValue & 0xf) }
    var owner: Int { Int(rawValue >> 4 & 0xfff) }
    var tag: Tag? { Tag(bits: rawValue >> 16 & 0xffff) }
    /// The run length of a head, the distance back to the head of a tail.
    var length: Int { Int(rawValue >> 32) }
    var isHead: Bool { kind == .allocated || kind == .cached }
}
