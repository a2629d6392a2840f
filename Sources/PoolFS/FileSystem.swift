import PoolCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The file system whose bytes are pool pages: inodes, directories,
/// extents and xattrs in memory, made durable as records of a metadata log
/// in the pool. No FUSE here: the adapter calls these methods.
///
/// Lock order: an inode's `syncing` (fsync alone takes it), `tree`, then an
/// inode's `lock`, then the log's mutex.
/// Namespace changes hold `tree` for writing; data operations hold it for
/// reading plus their inode's lock.
public final class FileSystem: @unchecked Sendable {
    public let pool: Pool
    public static let rootInode: UInt64 = 1
    /// The largest file: a truncate or write past it gives EFBIG.
    public static let maximumFileSize: UInt64 = 1 << 50
    public static let maximumNameLength = 255

    let log: MetadataLog
    let fragments: FragmentRuns
    let defaultHeap: Heap
    let pageSize: UInt64
    let pageShift: UInt64
    /// Every inode, by number; `tree`.
    var inodes: [UInt64: Inode] = [:]
    var nextInode: UInt64 = 2
    /// The next number of a snapshot's inode (FileSystem+Snapshots.swift).
    var nextFrozen = FileSystem.frozenBase + 1
    /// Reads move access times (FileSystem+Access.swift); off for `noatime`.
    public let accessTimes = Atomic<Bool>(true)
    let tree = ReadWriteLock()
    /// When the pool's pages were last counted, and what was found.
    let spaceCount = Mutex<(time: UInt64, free: UInt64, capacity: UInt64)>((0, 0, 0))
    /// Direct access's leased layouts (FileSystem+Direct.swift): set by
    /// the mount before it serves; nil in a model without clients.
    public var directLeases: DirectLeases?
    /// Pages released while a direct reader was slow to leave (slot -1),
    /// or while a client maps the layout in a slot: freed after the next
    /// grace period, once that slot is no longer mapped.
    let deferredReleases = Mutex<[(slot: Int, releases: [Release])]>([])
    /// Heaps by table number, opened once.
    private var heaps: [Int: Heap] = [:]
    private let heapsMutex = ThreadMutex()

    /// Who asks: new files belong to them.
    public struct Caller: Sendable {
        public let uid: UInt32
        public let gid: UInt32
        public init(uid: UInt32, gid: UInt32) {
            self.uid = uid
            self.gid = gid
        }
    }

    /// Mounts the pool's file system: replays its log (making an empty
    /// file system on first use), frees what a crash left unreferenced, and
    /// starts a fresh log. The pool must be locked for mounting.
    public convenience init(pool: Pool) throws {
        try self.init(pool: pool, inspecting: false)
    }

    /// A pool just restored from a checkpoint taken while mounted: its file
    /// system as it was at the checkpoint's snapshot `checkpoint`
    /// (FileSystem+Checkpoint.swift). The pool must be locked for mounting.
    public convenience init(pool: Pool, restoringCheckpoint checkpoint: FileName) throws {
        try self.init(pool: pool, inspecting: false, checkpoint: checkpoint)
    }

    /// `inspecting`: replays the log and changes nothing in the pool.
    init(pool: Pool, inspecting: Bool, checkpoint: FileName? = nil) throws {
        self.pool = pool
        pageSize = UInt64(pool.pageSize)
        pageShift = UInt64(pool.pageSize.trailingZeroBitCount)
        fragments = FragmentRuns(pool: pool)
        // The heap its log lies in, by number: the page table proves it,
        // where a name in a damaged heap row could mislead.
        let logHead = pool.rootAddress
        if !logHead.isNull {
            guard let id = pool.heapOfTrackedRun(at: logHead), let heap = pool.heap(id: id) else {
                throw PoolError.damaged(path: pool.path, reason: "the heap of the file system's log (at \(logHead)) "
                    + "is not live; `poolfs check --repair` makes it live again")
            }
            defaultHeap = heap
        } else {
            defaultHeap = try pool.openHeap(name: "default", create: !inspecting)
        }
        log = MetadataLog(pool: pool, heap: defaultHeap)
        var clean = false
        // A checkpoint's image holds the log up to its snapshot's record;
        // what came after it (appended while the image was taken) is not
        // the image's, and may be torn.
        var reached = false
        do {
            clean = try log.open(creating: !inspecting) { change in
                guard !reached else { return }
                _ = apply(change, replaying: true)
                if case .snapshot(let name, _) = change, name == checkpoint { reached = true }
            }
        } catch let damage as MetadataLog.Damaged {
            guard reached else {
                throw PoolError.damaged(path: pool.path, reason: "the file system's metadata log: \(damage.description)")
            }
        }
        if let checkpoint {
            guard reached else {
                throw PoolError.damaged(path: pool.path, reason: "the file system's log has no checkpoint '\(checkpoint)'")
            }
            try recoverCheckpoint(checkpoint)
            return
        }
        if inspecting { return }
        if inodes[FileSystem.rootInode] == nil {
            let now = Timestamp.now()
            let root = InodeRecord(
                number: FileSystem.rootInode, mode: S_IFDIR | 0o755, uid: getuid(), gid: getgid(), nlink: 2, rdev: 0,
                size: 0, atime: now, mtime: now, ctime: now, heap: defaultHeap.id, parent: FileSystem.rootInode,
                target: [])
            try log.append(.inode(root))
            inodes[FileSystem.rootInode] = Inode(root)
        }
        try recover(afterCrash: !clean)
        log.setClean(false)
    }

    /// Ends the mount in order: the next mount need not repair anything.
    public func unmount() {
        tree.writing {
            var lost = 0
            for inode in inodes.values where inode.dirty {
                do { try logWritten(inode) } catch { lost += 1 }
            }
            // A failed file system writes no more: the next mount repairs
            // as after a crash. Nor is a log marked clean that left a size
            // unlogged.
            guard !failed.load(ordering: .acquiring) else { return }
            // Dirty pages a node did not take stay cached, for the next mount.
            try? pool.writeBackAll()
            log.releaseSpares()
            if lost == 0 { log.setClean(true) }
        }
    }

    // MARK: Inodes and heaps

    /// The inode numbered `number`; `tree` held.
    func inode(_ number: UInt64) throws -> Inode {
        guard let inode = inodes[number] else { throw FileSystemError.notFound }
        return inode
    }

    func directory(_ number: UInt64) throws -> Inode {
        let inode = try inode(number)
        guard inode.isDirectory else { throw FileSystemError.notDirectory }
        return inode
    }

    func heap(_ id: Int) -> Heap {
        heapsMutex.withLock {
            if let heap = heaps[id], pool.heapExists(id: id) { return heap }
            // A heap destroyed since: the default serves, and is not
            // remembered under a number a new heap may take.
            guard let heap = pool.heap(id: id) else { return defaultHeap }
            heaps[id] = heap
            return heap
        }
    }

    // MARK: Attributes

    func attributes(_ inode: Inode) -> stat {
        let r = inode.record
        var st = stat()
        st.st_ino = UInt(r.number)
        st.st_mode = r.mode
        st.st_nlink = UInt(r.nlink)
        st.st_uid = r.uid
        st.st_gid = r.gid
        st.st_rdev = UInt(r.rdev)
        st.st_size = inode.isDirectory ? Int(4096) : Int(r.size)
        st.st_blksize = 1 << 20
        st.st_blocks = (inode.extents.pageCount * Int(pageSize) + (inode.extents.fragment?.fragmentBytes ?? 0)) / 512
        st.st_atim = r.atime.timespec
        st.st_mtim = r.mtime.timespec
        st.st_ctim = r.ctime.timespec
        return st
    }

    public func attributes(of number: UInt64) throws -> stat {
        try tree.reading {
            let inode = try inode(number)
            return inode.lock.reading { attributes(inode) }
        }
    }

    public func lookup(parent: UInt64, name: FileName) throws -> stat {
        try FileSystem.checkLength(name)
        return try tree.reading {
            let directory = try directory(parent)
            guard let number = directory.directory?.inode(named: name) else { throw FileSystemError.notFound }
            let inode = try inode(number)
            return inode.lock.reading { attributes(inode) }
        }
    }

    public func readLink(_ number: UInt64) throws -> [UInt8] {
        try tree.reading {
            let inode = try inode(number)
            guard inode.record.mode & S_IFMT == S_IFLNK else { throw FileSystemError.invalid }
            return inode.record.target
        }
    }

    /// Capacity and use, for statfs.
    public func statistics() -> (files: Int, usage: (capacityBytes: UInt64, freeBytes: UInt64)) {
        (tree.reading { inodes.count }, pool.usage())
    }

    // MARK: Committing

    /// Logs `change`, then makes it in memory; returns the runs it released,
    /// freed once no reader can be copying from them (the caller holds the
    /// locks that readers of those runs take).
    func commit(_ change: Change) throws {
        try commitLogOnly(change)
        let released = apply(change, replaying: false)
        // Direct readers first learn where the file's bytes are now (a
        // mount without an area, or the model, looks nothing up).
        let laidOut = directLeases == nil ? nil : change.fileLaidOut.flatMap { inodes[$0] }
        if let laidOut { publishLayout(laidOut) }
        if case .snapshot = change { publishAllLayouts() }
        if !released.isEmpty { freeAfterReaders(released, slot: laidOut?.lease ?? -1) }
    }

    func free(_ released: [Release]) {
        var ranges: [(address: GlobalAddress, count: Int)] = []
        for release in released {
            let extent = release.extent
            if extent.isFragment {
                // The run goes when its last fragment does, to the heap it came from.
                if let (run, _) = fragments.release(extent) { ranges.append((run, 1)) }
                continue
            }
            // Pages others share only count one owner fewer.
            for pages in release.freed {
                ranges.append((extent.address.advanced(by: UInt64(pages.lowerBound) << pageShift), pages.count))
            }
        }
        if ranges.count == 1 {
            try? pool.releaseTrackedPages(at: ranges[0].address, count: ranges[0].count)
        } else if !ranges.isEmpty {
            try? pool.releaseTrackedPages(ranges)
        }
    }

    /// Cuts the runs `unreferencedRuns` found to what is named, entry by
    /// entry under the pool's lock: a kill may have left one half cut,
    /// which must never go into a thread's cache of runs with stale entries
    /// inside.
    func freeFound(_ found: [Reshape]) {
        for reshape in found {
            try? heap(reshape.run.heap).reshapeTrackedRun(at: reshape.run.address, count: reshape.run.pages,
                                                          shares: reshape.run.shares, keeping: reshape.pieces)
        }
    }

    /// Logs the size and mtime that writes left unlogged. On failure the
    /// inode stays dirty (the next close, fsync or change tries again) and
    /// the caller hears of it: a fsync must not return before they are
    /// durable.
    func logWritten(_ inode: Inode) throws {
        try commitLogOnly(.written(inode: inode.number, size: inode.record.size, time: inode.record.mtime))
        inode.dirty = false
    }

    // MARK: Failure

    /// Set by the first change the log could not take for another reason
    /// than a full pool (damage, an I/O error): from then on changes and
    /// fsync fail with EIO, as ext4's errors=remount-ro; reads go on.
    /// `.pool/info` and the system log say why.
    public var failure: String? { failureMessage.withLock { $0 } }
    let failed = Atomic<Bool>(false)
    private let failureMessage = Mutex<String?>(nil)

    func noteFailure(_ what: String, _ error: any Error) {
        let first = failureMessage.withLock { message -> Bool in
            guard message == nil else { return false }
            message = "\(what): \(error)"
            return true
        }
        guard first else { return }
        failed.store(true, ordering: .releasing)
        SystemLog.write(.error, pool: pool.name, "\(what) failed (\(error)); the file system refuses changes (EIO) until it is mounted again")
    }

    /// EIO once the file system has failed.
    @inline(__always)
    func refuseIfFailed() throws {
        if failed.load(ordering: .relaxed) { throw FileSystemError.io }
    }

    /// Appends `change` to the log; a failure other than a full pool puts
    /// the file system in its failed state.
    func commitLogOnly(_ change: Change) throws {
        try refuseIfFailed()
        if change.changesSnapshot { throw FileSystemError.readOnly }
        try durably("logging a change") { try log.append(change) }
    }

    /// Runs a step that makes something durable (a log append, a flush of
    /// file bytes): a full pool stays ENOSPC; any other failure puts the
    /// file system in its failed state and is EIO.
    func durably<R>(_ what: String, _ body: () throws -> R) throws -> R {
        do {
            return try body()
        } catch let error as FileSystemError where error == .noSpace || error == .tooBig {
            throw error
        } catch PoolError.poolFull {
            throw FileSystemError.noSpace
        } catch PoolError.remoteShelf {
            // The node is down, not this pool: the change fails alone.
            throw FileSystemError.io
        } catch {
            noteFailure(what, error)
            throw FileSystemError.io
        }
    }
}
