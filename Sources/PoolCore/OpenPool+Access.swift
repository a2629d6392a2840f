import Atomics

/// An aligned 64-bit word of pool data, reached by global address.
struct DataWord {
    let shelf: Shelf
    let offset: Int

    func load() -> UInt64 { shelf.file.atomic(at: offset).load(ordering: .acquiring) }

    func store(_ value: UInt64) throws {
        storeUnchecked(value)
        try shelf.file.checkPersisted()
    }

    /// The store, for a caller that checks the flush itself once it is
    /// done (MappedFile.checkPersisted), as one that must not stop halfway.
    func storeUnchecked(_ value: UInt64) {
        shelf.file.atomic(at: offset).store(value, ordering: .releasing)
        shelf.file.persist(offset: offset, count: 8)
    }

    func compareExchange(expected: UInt64, desired: UInt64) -> (exchanged: Bool, original: UInt64) {
        let result = shelf.file.atomic(at: offset).compareExchange(
            expected: expected, desired: desired, ordering: .acquiringAndReleasing)
        if result.exchanged { shelf.file.persist(offset: offset, count: 8) }
        return result
    }

    func fetchAndAdd(_ value: UInt64) throws -> UInt64 {
        let original = shelf.file.atomic(at: offset).loadThenWrappingIncrement(by: value, ordering: .acquiringAndReleasing)
        shelf.file.persist(offset: offset, count: 8)
        try shelf.file.checkPersisted()
        return original
    }
}

/// Rcmp's Read/Write/CAS on any global address inside the data pages.
extension OpenPool {
    /// The shelf and file offset of `[address, address+count)`, which must
    /// lie inside one shelf's data pages (never its metadata).
    func resolve(_ address: GlobalAddress, count: Int) throws -> (Shelf, Int) {
        guard let shelf = shelf(address.shelf) else {
            throw PoolError.invalidAddress(address, reason: "the pool has no shelf \(address.shelf)")
        }
        guard count >= 0, shelf.containsData(offset: address.offset, count: UInt64(count)) else {
            throw PoolError.invalidAddress(address, reason: "\(count) bytes there fall outside shelf \(address.shelf)'s data pages")
        }
        return (shelf, Int(address.offset))
    }

    func dataWord(_ address: GlobalAddress) throws -> DataWord {
        guard address.offset & 7 == 0 else {
            throw PoolError.invalidAddress(address, reason: "not 8-byte aligned")
        }
        let (shelf, offset) = try resolve(address, count: 8)
        guard shelf.remote == nil else {
            throw PoolError.invalidAddress(address, reason: "atomic words on a remote shelf are the node's: use its RemotePool")
        }
        return DataWord(shelf: shelf, offset: offset)
    }

    func read(at address: GlobalAddress, into buffer: UnsafeMutableRawBufferPointer) throws {
        let (shelf, offset) = try resolve(address, count: buffer.count)
        if let remote = shelf.remote {
            return try remote.withBytes(offset: offset, count: buffer.count, writing: false) {
                buffer.copyMemory(from: UnsafeRawBufferPointer($0))
            }
        }
        shelf.file.withBytes(at: offset, count: buffer.count) { source in
            buffer.copyMemory(from: UnsafeRawBufferPointer(source))
        }
    }

    func write(at address: GlobalAddress, from buffer: UnsafeRawBufferPointer) throws {
        let (shelf, offset) = try resolve(address, count: buffer.count)
        if let remote = shelf.remote {
            // Pool.write returns with the bytes durable: on the node.
            try remote.withBytes(offset: offset, count: buffer.count, writing: true) { $0.copyMemory(from: buffer) }
            return try remote.writeBack(offset: offset, count: buffer.count)
        }
        shelf.file.withBytes(at: offset, count: buffer.count) { target in
            target.copyMemory(from: buffer)
        }
        shelf.file.persist(offset: offset, count: buffer.count)
        try shelf.file.checkPersisted()
    }

    /// Raw bytes of a checked range, for a closure only (regions, the mount).
    func withBytes<R>(at address: GlobalAddress, count: Int,
                      _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        let (shelf, offset) = try resolve(address, count: count)
        if let remote = shelf.remote { return try remote.withBytes(offset: offset, count: count, writing: true, body) }
        return try shelf.file.withBytes(at: offset, count: count, body)
    }

    func copy(to address: GlobalAddress, from source: UnsafeRawBufferPointer) throws {
        let (shelf, offset) = try resolve(address, count: source.count)
        if let remote = shelf.remote {
            return try remote.withBytes(offset: offset, count: source.count, writing: true) { $0.copyMemory(from: source) }
        }
        // While a freeze or a lazy clone protects pages, a pwrite (which
        // no protection sees) would change them unsaved: stores only. Asked
        // only of copies large enough to take that path.
        let byFile = source.count >= MappedFile.coldCopyMinimum
            && FreezeHelper.phase(metadata.atomic32(at: Layout.Control.freeze).load(ordering: .acquiring)) == .none
            && lazyClones?.isEmpty != false
        try shelf.file.copy(to: offset, from: source, byFile: byFile)
    }

    /// Durable where the shelf keeps its bytes: flushed on pmem; on a
    /// remote shelf, in the cache, which a kill does not lose
    /// (`writeBack` sends them to the node).
    func persist(at address: GlobalAddress, count: Int) throws {
        let (shelf, offset) = try resolve(address, count: count)
        guard shelf.remote == nil else { return }
        shelf.file.persist(offset: offset, count: count)
        try shelf.file.checkPersisted()
    }
}

/// Pointers for C callers: where a global address is mapped in this process,
/// and back.
extension OpenPool {
    func pointer(to address: GlobalAddress) -> UnsafeMutableRawPointer? {
        guard let table = table(holding: address), !table.isRemote, table.page(containing: address.offset) != nil else { return nil }
        return table.pages + Int(address.offset - table.dataOffset)
    }

    func pageStart(containing address: GlobalAddress) -> GlobalAddress? {
        guard let table = table(holding: address), let page = table.page(containing: address.offset) else { return nil }
        return table.address(ofPage: page)
    }

    private func table(holding address: GlobalAddress) -> UnsafePageTable? {
        shelves.table(address.shelf) ?? shelf(address.shelf)?.table
    }

    func dataSpans() -> [(start: GlobalAddress, bytes: UInt64)] {
        (0..<shelves.count).compactMap { index in
            guard let table = shelves.table(index) ?? shelf(index)?.table, !table.isRemote else { return nil }
            return (GlobalAddress(shelf: index, offset: table.dataOffset), UInt64(table.pageCount) << table.pageShift)
        }
    }

    func address(of pointer: UnsafeRawPointer) -> GlobalAddress? {
        for index in 0..<shelves.count {
            guard let table = shelves.table(index), !table.isRemote else { continue }
            let start = UnsafeRawPointer(table.pages)
            let bytes = table.pageCount << Int(table.pageShift)
            if pointer >= start && pointer < start + bytes {
                return GlobalAddress(shelf: index, offset: table.dataOffset + UInt64(pointer - start))
            }
        }
        return nil
    }
}
