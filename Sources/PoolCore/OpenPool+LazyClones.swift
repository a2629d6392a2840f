/// Region clones that share their source's pages until either is touched
/// (FreezeHelper+LazyClones keeps them, LazyCloneTable lists them).
extension OpenPool {
    /// Makes `clone` (a new region whose pages are holes) a lazy clone of
    /// region `index` (`source`): listed in the table, then a freeze of the
    /// source, at whose instant every process follows it. False when the
    /// table is full (the caller copies instead).
    func shareRegion(_ source: RegionInfo, index: Int, into clone: RegionInfo) throws -> Bool {
        guard let table = try openLazyClones(creating: true) else { return false }
        let bytes = UInt64(source.pages) * pageSize
        // Mapped here before the freeze (its helper maps none while this
        // thread holds the global lock).
        guard shelf(source.address.shelf) != nil, shelf(clone.address.shelf) != nil else { return false }
        guard let entry = try withGlobalLock({ table.add(source: source.address, clone: clone.address, bytes: bytes) }) else {
            return false
        }
        do {
            _ = try freeze(including: { $0 == .region(index) }) {}
            thaw()
        } catch {
            // Processes that followed it keep a registration that reads
            // zeros from now on: the clone region goes too (the caller).
            _ = try? withGlobalLock { table.remove(entry) }
            throw error
        }
        return true
    }
}

extension OpenPool {
    /// The region row whose run starts at `address` and spans `bytes`, if
    /// its run is allocated to it (a live row, or one half destroyed).
    func regionRow(at address: GlobalAddress, bytes: UInt64) -> Int? {
        (0..<Layout.Regions.capacity).first { index in
            guard let state = rowState(index), state != .free else { return false }
            let info = regionInfo(index)
            return info.address == address && UInt64(info.pages) * pageSize == bytes && ownRun(ofRow: index) != nil
        }
    }

    /// Why the table's entry is not sound (its clone or source is no live
    /// region's run), or nil.
    func lazyCloneProblem(_ entry: LazyClone) -> String? {
        let clone = regionRow(at: entry.clone, bytes: entry.bytes), source = regionRow(at: entry.source, bytes: entry.bytes)
        guard let clone, rowState(clone) == .live else {
            return "region clone table slot \(entry.slot) names \(entry.clone), which is no live region's run"
        }
        guard let source, rowState(source) == .live else {
            return "region clone table slot \(entry.slot): the source of '\(regionInfo(clone).name)' at \(entry.source) is no live region's run"
        }
        return nil
    }

    /// `check --repair`, no other process open: an unsound entry goes. A
    /// clone whose source is still allocated (its destroyer died) is filled
    /// from it first, by pread and pwrite (nobody else writes either).
    /// Global lock held.
    func repairLazyClones() -> [String] {
        guard let table = try? openLazyClones(creating: false) else { return [] }
        var done: [String] = []
        for entry in table.entries() where lazyCloneProblem(entry) != nil {
            if let clone = regionRow(at: entry.clone, bytes: entry.bytes), rowState(clone) == .live,
               regionRow(at: entry.source, bytes: entry.bytes) != nil, (try? fillAlone(entry)) != nil {
                done.append("filled region '\(regionInfo(clone).name)' from its source, which was being destroyed")
            } else {
                done.append("dropped region clone table slot \(entry.slot) (\(entry.clone)): its pages not filled read as zeros")
            }
            table.remove(entry)
        }
        table.recount()
        return done
    }

    /// Fills `entry`'s holes by pread and pwrite: with no other process.
    private func fillAlone(_ entry: LazyClone) throws {
        guard let source = shelves[entry.source.shelf], let clone = shelves[entry.clone.shelf] else { return }
        let page = FreezeArea.pageBytes
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: page, alignment: page)
        defer { buffer.deallocate() }
        for at in stride(from: 0, to: Int(entry.bytes), by: page) {
            let target = Int(entry.clone.offset) + at
            guard clone.file.heldBytes(offset: target, count: page) == 0 else { continue }
            try source.file.readByFile(at: Int(entry.source.offset) + at, into: buffer)
            try clone.file.writeByFile(at: target, UnsafeRawBufferPointer(buffer))
        }
    }
}

/// A region clone that still shares pages with its source.
public struct RegionSharing: Sendable, Equatable {
    /// The source region's name.
    public var source: String
    /// Of the clone's bytes, those it holds itself (filled since the clone).
    public var heldBytes: UInt64
}

extension OpenPool {
    /// The clones that still share pages, by the clone region's name.
    func regionSharing() -> [String: RegionSharing] {
        guard let table = try? openLazyClones(creating: false) else { return [:] }
        var sharing: [String: RegionSharing] = [:]
        for entry in table.entries() {
            guard let clone = regionRow(at: entry.clone, bytes: entry.bytes),
                  let source = regionRow(at: entry.source, bytes: entry.bytes),
                  let shelf = shelf(entry.clone.shelf) else { continue }
            let held = shelf.file.heldBytes(offset: Int(entry.clone.offset), count: Int(entry.bytes))
            sharing[regionInfo(clone).name] = RegionSharing(source: regionInfo(source).name, heldBytes: UInt64(held))
        }
        return sharing
    }
}
