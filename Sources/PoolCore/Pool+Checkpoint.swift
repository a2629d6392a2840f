#if canImport(Glibc)
import Glibc
#endif

/// What a checkpoint image holds of a pool (Mome's checkpoints; the image
/// format is the command's): each shelf's metadata (header, page table,
/// bitmap, and shelf 0's tables) as it was at one instant, and the bytes of
/// the runs that page table says are allocated. A restore writes them back
/// into a new pool of the same geometry, which then opens as a pool whose
/// processes all died: what they held is recovered as after any crash.
public struct CheckpointShelf: Sendable {
    public let index: Int
    public let size: UInt64
    public let medium: Medium
    /// Bytes `0 ..< metadata.count` of the shelf file, copied under the
    /// pool's lock: no run is half claimed or half freed in them.
    public let metadata: [UInt8]
    /// The allocated runs, as byte ranges of the shelf file.
    public let runs: [Range<UInt64>]

    public init(index: Int, size: UInt64, medium: Medium, metadata: [UInt8], runs: [Range<UInt64>]) {
        self.index = index
        self.size = size
        self.medium = medium
        self.metadata = metadata
        self.runs = runs
    }
}

extension Pool {
    /// Every shelf's metadata and allocated runs, at one instant. The pool
    /// is frozen (OpenPool+Freeze) until `thaw()`, so `readShelf` gives the
    /// runs' bytes of that instant while programs write on; where it cannot
    /// be, `unfrozen` says why, and the runs are read as they are then. A
    /// remote shelf's runs are read from its node, but for the pages its
    /// cache holds newer, and are frozen the same way.
    public func checkpointShelves() throws -> (shelves: [CheckpointShelf], unfrozen: String?) {
        do {
            // The file system's runs (tracked) are frozen by its snapshot,
            // or unwritten (the command holds an unmounted pool).
            let notTracked = { (tag: PageEntry.Tag?) -> Bool in
                if case .tracked = tag { return false }
                return true
            }
            return (try core.freeze(including: notTracked, atInstant: collectShelves).1, nil)
        } catch let PoolError.cannotFreeze(_, reason) {
            return (try core.withGlobalLock(collectShelves), reason)
        }
    }

    /// Ends the freeze `checkpointShelves` began.
    public func thaw() { core.thaw() }

    /// Global lock held: no run's extent changes meanwhile.
    private func collectShelves() throws -> [CheckpointShelf] {
        core.shelves.all.map { shelf in
            let metadata = Array(UnsafeRawBufferPointer(start: shelf.file.pointer(at: 0, count: Int(shelf.geometry.dataOffset)),
                                                        count: Int(shelf.geometry.dataOffset)))
            return CheckpointShelf(index: shelf.index, size: shelf.geometry.size, medium: shelf.file.medium,
                                   metadata: metadata, runs: shelf.allocatedRuns())
        }
    }

    /// Reads `buffer.count` bytes at `offset` of shelf `index`'s file into
    /// `buffer`: by the file, not this process's mapping, which would take
    /// a page fault per page not touched here before. While this process
    /// freezes the pool, the bytes are those of the freeze's instant.
    public func readShelf(_ index: Int, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try core.readShelf(index, offset: offset, into: buffer)
    }

    /// Makes pool `name` from a checkpoint: a pool of `pageSize` pages and
    /// these shelves is created, `fill` writes the image's bytes through the
    /// writer it is given, and the pool takes the name `name` (the image's
    /// superblock carries the old one). A remote shelf comes back as a
    /// dram shelf holding its bytes, and heaps placed on remote shelves
    /// go back to the pool's placement. On any failure the new pool goes.
    public static func restore(name: String, at home: String? = nil, pageSize: UInt64, shelves: [(size: UInt64, medium: Medium)],
                               _ fill: (CheckpointWriter) throws -> Void) throws {
        guard let first = shelves.first else { throw PoolError.invalidSize("0 shelves", reason: "an image has shelf 0") }
        let local = { (medium: Medium) in medium == .remote ? Medium.dram : medium }
        let pool = try Pool.create(name: name, size: first.size, pageSize: pageSize, medium: local(first.medium), at: home)
        do {
            for shelf in shelves.dropFirst() { _ = try pool.grow(by: shelf.size, medium: local(shelf.medium)) }
            pool.close()
            try withNoOtherOpener(name: name, at: home) { core in
                let files = core.shelves.all.map(\.file)
                guard files.count == shelves.count, zip(files, shelves).allSatisfy({ UInt64($0.length) == $1.size }) else {
                    throw PoolError.damaged(path: core.directory, reason: "its shelves came out other than the image's")
                }
                // What the new files hold of their blocks, not what the old ones did.
                let reserved = files.map { ($0.load(UInt64.self, at: Layout.ShelfHeader.reservedBytes),
                                            $0.load(UInt64.self, at: Layout.ShelfHeader.givenBackFrom)) }
                let media = files.map { ShelfHeader.medium($0) ?? .dram }
                try fill(CheckpointWriter(files: files))
                for (file, (bytes, givenBack)) in zip(files, reserved) {
                    file.store(bytes, at: Layout.ShelfHeader.reservedBytes)
                    file.store(givenBack, at: Layout.ShelfHeader.givenBackFrom)
                }
                try makeRemoteShelvesLocal(core, files: files, media: media)
                let base = Layout.Superblock.offset
                files[0].storeText(name, at: base + Layout.Superblock.name, capacity: Layout.Superblock.nameCapacity)
                files[0].store(Checksum.of(files[0], offset: base, count: Layout.Superblock.checksummed),
                               at: base + Layout.Superblock.checksum)
                // Whoever takes the lock next rebuilds what its holder may have torn.
                files[0].store(UInt64(1), at: Layout.Control.lockDirty)
                for file in files { file.persistAll() }
                try files[0].checkPersisted()
            }
        } catch {
            pool.close()
            try? Pool.destroy(name: name, at: home)
            throw error
        }
    }
}

extension Pool {
    /// The image's shelves that were remote (its headers and shelf table
    /// say so) become the new files' medium; heaps placed on them, the
    /// pool's placement.
    private static func makeRemoteShelvesLocal(_ core: OpenPool, files: [MappedFile], media: [Medium]) throws {
        let uuid = try Superblock.read(files[0]).uuid
        for (index, (file, medium)) in zip(files, media).enumerated() where ShelfHeader.medium(file) == .remote {
            ShelfHeader.setMedium(file, medium)
            ShelfTable.publish(files[0], index: index, record: ShelfRecord(size: file.load(UInt64.self, at: Layout.ShelfHeader.size), medium: medium), uuid: uuid)
        }
        for heap in 0..<Layout.Heaps.capacity where core.heapIsLive(heap) {
            if case .remote? = core.storedPlacement(ofHeap: heap) { core.storePlacement(nil, ofHeap: heap) }
        }
    }
}

/// Writes a checkpoint's bytes into the shelf files of the pool being
/// restored, each write checked to lie inside its shelf.
public struct CheckpointWriter {
    let files: [MappedFile]

    public func write(shelf: Int, offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
        guard shelf >= 0, shelf < files.count, offset <= UInt64(files[shelf].length),
              bytes.count <= files[shelf].length - Int(offset) else {
            throw PoolError.invalidSize("\(bytes.count) bytes at shelf \(shelf) offset \(offset)",
                                        reason: "past the shelf's end")
        }
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        files[shelf].pointer(at: Int(offset), count: bytes.count).copyMemory(from: source, byteCount: bytes.count)
    }
}
