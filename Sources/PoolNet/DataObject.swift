import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Lunasa's data object: one block of registered memory cut into a local
/// header (the owner's, never sent), a header (the sizes, sent), user
/// metadata and user data. The header, metadata and data lie together, so
/// one transfer puts the object into a node's pool (`RemotePool.send`).
/// Eager objects come from an arena registered once per RemotePool; lazy
/// ones from the heap, registered the first time they are sent, their
/// registration dropped when they go.
public final class DataObject: @unchecked Sendable {
    public enum Memory: Sendable { case eager, lazy }

    public static let localHeaderBytes = 64
    /// Magic, metadata bytes, data bytes, and a word kept zero.
    public static let headerBytes = 32
    static let magic: UInt64 = 0x314f_444c_5346_4f50  // "POFSLDO1"

    public let metadataBytes: Int
    public let dataBytes: Int
    public let memory: Memory
    private let storage: UnsafeMutableRawBufferPointer
    private let release: (UnsafeMutableRawBufferPointer) -> Void

    init(metadataBytes: Int, dataBytes: Int, memory: Memory, storage: UnsafeMutableRawBufferPointer,
         release: @escaping (UnsafeMutableRawBufferPointer) -> Void) {
        self.metadataBytes = metadataBytes
        self.dataBytes = dataBytes
        self.memory = memory
        self.storage = storage
        self.release = release
        DataObject.writeHeader(into: UnsafeMutableRawBufferPointer(rebasing: storage[Self.localHeaderBytes...]),
                               metadataBytes: metadataBytes, dataBytes: dataBytes)
    }

    deinit { release(storage) }

    static func storageBytes(metadataBytes: Int, dataBytes: Int) -> Int {
        localHeaderBytes + headerBytes + metadataBytes + dataBytes
    }

    /// The owner's own 64 bytes: never sent.
    public var localHeader: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: storage[0..<Self.localHeaderBytes])
    }

    public var metadata: UnsafeMutableRawBufferPointer {
        let start = Self.localHeaderBytes + Self.headerBytes
        return UnsafeMutableRawBufferPointer(rebasing: storage[start..<start + metadataBytes])
    }

    public var data: UnsafeMutableRawBufferPointer {
        let start = Self.localHeaderBytes + Self.headerBytes + metadataBytes
        return UnsafeMutableRawBufferPointer(rebasing: storage[start..<start + dataBytes])
    }

    /// Header, metadata and data: what one transfer sends.
    public var wireBytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: storage[Self.localHeaderBytes...])
    }

    static func writeHeader(into buffer: UnsafeMutableRawBufferPointer, metadataBytes: Int, dataBytes: Int) {
        for (index, word) in [magic, UInt64(metadataBytes), UInt64(dataBytes), 0].enumerated() {
            buffer.storeBytes(of: word.littleEndian, toByteOffset: index * 8, as: UInt64.self)
        }
    }

    /// The metadata and data sizes a header names, nil if it is no object's.
    static func sizes(inHeader bytes: UnsafeRawBufferPointer) -> (metadata: Int, data: Int)? {
        let words = (0..<4).map { UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) }
        guard words[0] == magic, words[1] <= UInt64(Int32.max), words[2] <= UInt64(Int.max / 2) else { return nil }
        return (Int(words[1]), Int(words[2]))
    }
}

/// A data object around memory its caller owns and keeps: the caller's
/// buffer holds the header (its first `DataObject.headerBytes`, written
/// here), then `metadataBytes` of metadata, then data. Registered when
/// first sent, as lazy memory is; `RemotePool.unregister` before the
/// caller frees it.
public struct UserObject: @unchecked Sendable {
    public let buffer: UnsafeMutableRawBufferPointer
    public let metadataBytes: Int

    public init(wrapping buffer: UnsafeMutableRawBufferPointer, metadataBytes: Int) throws {
        guard metadataBytes >= 0, buffer.count >= DataObject.headerBytes + metadataBytes else {
            throw NetError.invalidSize("\(buffer.count) bytes", reason: "a user object holds its \(DataObject.headerBytes)-byte header "
                + "and \(metadataBytes) bytes of metadata before its data")
        }
        self.buffer = buffer
        self.metadataBytes = metadataBytes
        DataObject.writeHeader(into: buffer, metadataBytes: metadataBytes, dataBytes: dataBytes)
    }

    public var dataBytes: Int { buffer.count - DataObject.headerBytes - metadataBytes }

    public var metadata: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: buffer[DataObject.headerBytes..<DataObject.headerBytes + metadataBytes])
    }

    public var data: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: buffer[(DataObject.headerBytes + metadataBytes)...])
    }
}

/// Memory registered once for a RemotePool's eager data objects: first fit
/// among free stretches, 64-byte aligned.
final class ObjectArena: @unchecked Sendable {
    static let bytes = 64 << 20
    let memory: UnsafeMutableRawBufferPointer
    private var free: [Range<Int>]
    private let mutex = ThreadMutex()

    init() throws {
        guard let base = mmap(nil, Self.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              base != MAP_FAILED else {
            throw NetError.invalidSize("\(Self.bytes) bytes", reason: "no memory for the eager arena: \(String(cString: strerror(errno)))")
        }
        memory = UnsafeMutableRawBufferPointer(start: base, count: Self.bytes)
        free = [0..<Self.bytes]
    }

    deinit { munmap(memory.baseAddress, memory.count) }

    func allocate(_ count: Int) -> UnsafeMutableRawBufferPointer? {
        let rounded = (count + 63) & ~63
        return mutex.withLock {
            guard let index = free.firstIndex(where: { $0.count >= rounded }) else { return nil }
            let start = free[index].lowerBound
            free[index] = start + rounded..<free[index].upperBound
            if free[index].isEmpty { free.remove(at: index) }
            return UnsafeMutableRawBufferPointer(rebasing: memory[start..<start + rounded])
        }
    }

    func deallocate(_ block: UnsafeMutableRawBufferPointer) {
        let start = block.baseAddress! - memory.baseAddress!
        mutex.withLock {
            var range = start..<start + block.count
            let index = free.firstIndex { $0.lowerBound > range.lowerBound } ?? free.count
            if index < free.count, free[index].lowerBound == range.upperBound {
                range = range.lowerBound..<free[index].upperBound
                free.remove(at: index)
            }
            if index > 0, free[index - 1].upperBound == range.lowerBound {
                range = free[index - 1].lowerBound..<range.upperBound
                free.remove(at: index - 1)
                free.insert(range, at: index - 1)
            } else {
                free.insert(range, at: index)
            }
        }
    }
}

extension RemotePool {
    /// A data object with room for `metadataBytes` and `dataBytes`, from
    /// the eager arena (registered once; lazy memory when it is full) or
    /// lazy memory.
    public func makeObject(metadataBytes: Int, dataBytes: Int, memory: DataObject.Memory = .eager) throws -> DataObject {
        guard metadataBytes >= 0, dataBytes >= 0, metadataBytes <= Int(Int32.max), dataBytes <= Int(Int32.max) else {
            throw NetError.invalidSize("\(metadataBytes) + \(dataBytes) bytes", reason: "metadata and data are 0 to 2^31 bytes each")
        }
        let count = DataObject.storageBytes(metadataBytes: metadataBytes, dataBytes: dataBytes)
        if memory == .eager, let arena = try eagerArena(), let block = arena.allocate(count) {
            return DataObject(metadataBytes: metadataBytes, dataBytes: dataBytes, memory: .eager, storage: block) { block in
                arena.deallocate(block)
            }
        }
        guard let base = aligned_alloc(64, (count + 63) & ~63) else {
            throw NetError.invalidSize("\(count) bytes", reason: "out of memory")
        }
        let storage = UnsafeMutableRawBufferPointer(start: base, count: count)
        return DataObject(metadataBytes: metadataBytes, dataBytes: dataBytes, memory: .lazy, storage: storage) { [weak self] block in
            self?.unregister(UnsafeRawBufferPointer(block))
            Glibc.free(block.baseAddress)
        }
    }

    /// Puts the object's header, metadata and data at `address` of the
    /// node's pool, in one transfer.
    public func send(_ object: DataObject, to address: GlobalAddress) throws {
        try write(at: address, from: object.wireBytes)
    }

    public func send(_ object: UserObject, to address: GlobalAddress) throws {
        try write(at: address, from: UnsafeRawBufferPointer(object.buffer))
    }

    /// The object at `address`: its header read first, then its metadata
    /// and data in one transfer, into a new object of `memory`.
    public func receiveObject(at address: GlobalAddress, memory: DataObject.Memory = .lazy) throws -> DataObject {
        var header = [UInt8](repeating: 0, count: DataObject.headerBytes)
        try header.withUnsafeMutableBytes { try read(at: address, into: $0) }
        guard let sizes = header.withUnsafeBytes({ DataObject.sizes(inHeader: $0) }) else {
            throw NetError.invalidAddress(address, reason: "no data object's header there")
        }
        let object = try makeObject(metadataBytes: sizes.metadata, dataBytes: sizes.data, memory: memory)
        let rest = UnsafeMutableRawBufferPointer(mutating: object.wireBytes)
        try read(at: address.advanced(by: UInt64(DataObject.headerBytes)),
                 into: UnsafeMutableRawBufferPointer(rebasing: rest[DataObject.headerBytes...]))
        return object
    }

    /// The arena, made and registered at the first eager object.
    private func eagerArena() throws -> ObjectArena? {
        try lock.withLock {
            if let arena { return arena }
            let made = try ObjectArena()
            _ = try registrations.registerEager(UnsafeRawBufferPointer(made.memory))
            arena = made
            return made
        }
    }
}
