import PoolCore

/// One shelf as a client sees it: its data pages.
struct RemoteShelf: Sendable {
    var index: Int
    var start: GlobalAddress
    var bytes: UInt64

    func contains(_ address: GlobalAddress, count: Int) -> Bool {
        address.shelf == index && address.offset >= start.offset && count >= 0
            && UInt64(count) <= bytes && address.offset - start.offset <= bytes - UInt64(count)
    }
}

/// What a node tells a client that proved its key.
struct PoolDescription: Sendable {
    var name: String
    var uuid: String
    var pageSize: Int
    var shelves: [RemoteShelf]
}

/// A region as a remote client sees it: where it starts and how long it is.
public struct RemoteRegion: Sendable, Equatable {
    public var name: String
    public var address: GlobalAddress
    public var size: UInt64
}

/// The calls a client makes to the node. Bytes travel beside the message
/// of a write and of a read's answer, by UCX's rendezvous when large (zero
/// copy where the fabric allows).
///
/// Why calls and not one-sided reads and writes: over TCP, UCX emulates
/// one-sided access in the serving process and checks no remote key there,
/// so any peer that can connect could read and write anywhere in the
/// node's memory. A node therefore offers UCX no remote memory access at
/// all, and checks every address against the pool's data pages itself.
enum NodeCall: Sendable {
    case allocate(count: Int)
    case free(GlobalAddress, count: Int)
    case openRegion(String)
    case createRegion(String, size: UInt64)
    /// Frees a region's pages (a pool's remote shelf, destroyed with it).
    case destroyRegion(String)
    /// The shelves again, after the pool grew.
    case describe
    /// The heartbeat.
    case ping
    /// Answered by `.data` with the bytes alongside.
    case read(GlobalAddress, count: Int)
    /// The bytes come alongside; answered once they are in the pool (and
    /// persisted, on a pmem shelf).
    case write(GlobalAddress, count: Int)
    case compareAndSwap(GlobalAddress, expected: UInt64, desired: UInt64)
    case fetchAndAdd(GlobalAddress, UInt64)
}

enum NodeAnswer: Sendable {
    case done
    case address(GlobalAddress)
    case region(RemoteRegion)
    case pool(PoolDescription)
    case failure(errno: Int32, message: String)
    /// The bytes of a read follow the message.
    case data(count: Int)
    /// The word an atomic found.
    case word(UInt64)
}

/// The protocol's messages, each one UCX Active Message.
enum NodeMessage: Sendable {
    static let version: UInt32 = 1
    static let nonceBytes = 32

    case hello(version: UInt32, nonce: [UInt8])
    case challenge(nonce: [UInt8], proof: [UInt8])
    case response(proof: [UInt8])
    case welcome(PoolDescription)
    case refusal(String)
    case request(id: UInt64, NodeCall)
    case reply(id: UInt64, NodeAnswer)
    /// A client leaving on purpose.
    case goodbye

    func encoded() -> [UInt8] {
        var w = WireWriter()
        switch self {
        case let .hello(version, nonce): w.u8(1); w.u32(version); w.data(nonce)
        case let .challenge(nonce, proof): w.u8(2); w.data(nonce); w.data(proof)
        case let .response(proof): w.u8(3); w.data(proof)
        case let .welcome(pool): w.u8(4); Self.encode(pool, &w)
        case let .refusal(reason): w.u8(5); w.string(reason)
        case let .request(id, call):
            w.u8(6); w.u64(id)
            switch call {
            case let .allocate(count): w.u8(1); w.u64(UInt64(count))
            case let .free(address, count): w.u8(2); w.address(address); w.u64(UInt64(count))
            case let .openRegion(name): w.u8(3); w.string(name)
            case let .createRegion(name, size): w.u8(4); w.string(name); w.u64(size)
            case let .destroyRegion(name): w.u8(12); w.string(name)
            case .describe: w.u8(5)
            case .ping: w.u8(7)
            case let .read(address, count): w.u8(8); w.address(address); w.u64(UInt64(count))
            case let .write(address, count): w.u8(9); w.address(address); w.u64(UInt64(count))
            case let .compareAndSwap(address, expected, desired): w.u8(10); w.address(address); w.u64(expected); w.u64(desired)
            case let .fetchAndAdd(address, value): w.u8(11); w.address(address); w.u64(value)
            }
        case let .reply(id, answer):
            w.u8(7); w.u64(id)
            switch answer {
            case .done: w.u8(1)
            case let .address(address): w.u8(2); w.address(address)
            case let .region(region): w.u8(3); w.string(region.name); w.address(region.address); w.u64(region.size)
            case let .pool(pool): w.u8(4); Self.encode(pool, &w)
            case let .failure(code, message): w.u8(5); w.i32(code); w.string(message)
            case let .data(count): w.u8(6); w.u64(UInt64(count))
            case let .word(value): w.u8(7); w.u64(value)
            }
        case .goodbye: w.u8(8)
        }
        return w.bytes
    }

    static func decode(_ bytes: [UInt8]) throws(NetError) -> NodeMessage {
        var r = WireReader(bytes)
        let message: NodeMessage
        switch try r.u8() {
        case 1: message = .hello(version: try r.u32(), nonce: try r.data(atMost: nonceBytes))
        case 2: message = .challenge(nonce: try r.data(atMost: nonceBytes), proof: try r.data(atMost: 64))
        case 3: message = .response(proof: try r.data(atMost: 64))
        case 4: message = .welcome(try decodePool(&r))
        case 5: message = .refusal(try r.string())
        case 6:
            let id = try r.u64()
            let call: NodeCall = switch try r.u8() {
            case 1: .allocate(count: try count(&r))
            case 2: .free(try r.address(), count: try count(&r))
            case 3: .openRegion(try r.string())
            case 4: .createRegion(try r.string(), size: try r.u64())
            case 5: .describe
            case 7: .ping
            case 8: .read(try r.address(), count: try count(&r))
            case 9: .write(try r.address(), count: try count(&r))
            case 10: .compareAndSwap(try r.address(), expected: try r.u64(), desired: try r.u64())
            case 11: .fetchAndAdd(try r.address(), try r.u64())
            case 12: .destroyRegion(try r.string())
            case let other: throw .protocolViolation("unknown call \(other)")
            }
            message = .request(id: id, call)
        case 7:
            let id = try r.u64()
            let answer: NodeAnswer = switch try r.u8() {
            case 1: .done
            case 2: .address(try r.address())
            case 3: .region(RemoteRegion(name: try r.string(), address: try r.address(), size: try r.u64()))
            case 4: .pool(try decodePool(&r))
            case 5: .failure(errno: try r.i32(), message: try r.string())
            case 6: .data(count: try count(&r))
            case 7: .word(try r.u64())
            case let other: throw .protocolViolation("unknown answer \(other)")
            }
            message = .reply(id: id, answer)
        case 8: message = .goodbye
        case let other: throw .protocolViolation("unknown message kind \(other)")
        }
        try r.finish()
        return message
    }

    private static func count(_ r: inout WireReader) throws(NetError) -> Int {
        let value = try r.u64()
        guard value <= UInt64(Int32.max) else { throw .protocolViolation("a count of \(value)") }
        return Int(value)
    }

    private static func encode(_ pool: PoolDescription, _ w: inout WireWriter) {
        w.string(pool.name); w.string(pool.uuid); w.u64(UInt64(pool.pageSize)); w.u32(UInt32(pool.shelves.count))
        for shelf in pool.shelves {
            w.u32(UInt32(shelf.index)); w.address(shelf.start); w.u64(shelf.bytes)
        }
    }

    private static func decodePool(_ r: inout WireReader) throws(NetError) -> PoolDescription {
        let name = try r.string(), uuid = try r.string(), pageSize = try r.u64(), count = try r.u32()
        guard pageSize.nonzeroBitCount == 1, pageSize < 1 << 31, count <= 1 << 16 else {
            throw .protocolViolation("a pool of \(pageSize)-byte pages and \(count) shelves")
        }
        var shelves: [RemoteShelf] = []
        for _ in 0..<count {
            let index = try r.u32()
            guard index < 1 << 16 else { throw .protocolViolation("shelf \(index)") }
            shelves.append(RemoteShelf(index: Int(index), start: try r.address(), bytes: try r.u64()))
        }
        return PoolDescription(name: name, uuid: uuid, pageSize: Int(pageSize), shelves: shelves)
    }
}
