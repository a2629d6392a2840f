#if canImport(Glibc)
import Glibc
#endif

/// What a new inode is made with; also its whole state in a log snapshot.
struct InodeRecord: Sendable {
    var number: UInt64
    var mode: UInt32
    var uid: UInt32
    var gid: UInt32
    var nlink: UInt32
    var rdev: UInt64
    var size: UInt64
    var atime: Timestamp
    var mtime: Timestamp
    var ctime: Timestamp
    /// Where the file's pages come from; for a directory, where its new files' pages come from.
    var heap: Int
    /// A directory's parent (its ".."); 0 otherwise.
    var parent: UInt64
    /// A symbolic link's target.
    var target: [UInt8]
}

/// A file, directory or link, in memory. The pool holds its durable form as
/// records of the metadata log.
///
/// Locking: the file system's `tree` lock held for writing guards every
/// field; with `tree` held for reading, `lock` guards the fields below
/// (size, times, extents, opens) — readers of those take it for reading.
final class Inode: @unchecked Sendable {
    var record: InodeRecord
    var extents = ExtentMap()
    var directory: Directory?
    var xattrs: [FileName: [UInt8]] = [:]
    /// Open file handles (and open directory streams).
    var opens = 0
    /// Written since size and times were last logged.
    var dirty = false
    /// Byte ranges written since the last fsync: what fsync makes durable,
    /// rather than every page the file has (on pmem a flush costs per
    /// byte). Merged as they come; past `maximumUnsynced` ranges, one range
    /// spans them all. `wholeUnsynced` (after a mount: what earlier mounts
    /// wrote may not be durable yet) stands for all of the file.
    var unsynced: [Range<UInt64>] = []
    var wholeUnsynced = false
    static let maximumUnsynced = 16
    /// Held by an fsync from start to end (outside `tree`): a second fsync
    /// must not find the ranges the first took and has yet to flush gone,
    /// and return before they are durable.
    let syncing = ReadWriteLock()
    /// Whether the pages of its last run past its size were taken ahead of
    /// its appends (FileSystem+Allocation.swift), to go back at its last close,
    /// or at the next mount after a kill (logged: Change.ahead).
    var aheadOfSize = false
    /// The slot of its layout leased to direct access, -1 if none
    /// (FileSystem+Direct.swift); until its last close.
    var lease = -1
    let lock = ReadWriteLock()

    init(_ record: InodeRecord) {
        self.record = record
        if record.mode & S_IFMT == S_IFDIR { directory = Directory() }
    }

    func noteUnsynced(_ range: Range<UInt64>) {
        guard !range.isEmpty, !wholeUnsynced else { return }
        if let last = unsynced.last, last.overlaps(range) || last.upperBound == range.lowerBound
            || range.upperBound == last.lowerBound {
            unsynced[unsynced.count - 1] = min(last.lowerBound, range.lowerBound)..<max(last.upperBound, range.upperBound)
        } else if unsynced.count < Inode.maximumUnsynced {
            unsynced.append(range)
        } else {
            let low = unsynced.reduce(range.lowerBound) { min($0, $1.lowerBound) }
            let high = unsynced.reduce(range.upperBound) { max($0, $1.upperBound) }
            unsynced = [low..<high]
        }
    }

    var number: UInt64 { record.number }
    var isDirectory: Bool { record.mode & S_IFMT == S_IFDIR }
    var isRegular: Bool { record.mode & S_IFMT == S_IFREG }
}
