import CUCX
import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// The handshake and the calls, as the node answers them.
extension MemoryNode {
    func receive(_ bytes: [UInt8], on endpoint: OpaquePointer) {
        guard var connection = connections[endpoint] else { return }
        let message: NodeMessage
        do {
            message = try NodeMessage.decode(bytes)
        } catch {
            refuse(endpoint, "\(error)")
            return
        }
        switch (connection.state, message) {
        case (.refused, _):
            return
        case let (_, .refusal(reason)):
            drop(endpoint, because: "refused: \(reason)", quietly: false)
        case (_, .goodbye):
            drop(endpoint, because: "disconnected", quietly: !connection.isReady)
        case let (.awaitingHello, .hello(version, clientNonce)):
            guard version == NodeMessage.version else {
                refuse(endpoint, "protocol version \(version); this node speaks \(NodeMessage.version)")
                return
            }
            guard clientNonce.count == NodeMessage.nonceBytes else {
                refuse(endpoint, "a hello without a \(NodeMessage.nonceBytes)-byte nonce")
                return
            }
            let nodeNonce = NodeKey.randomBytes(NodeMessage.nonceBytes)
            connection.state = .awaitingResponse(clientNonce: clientNonce, nodeNonce: nodeNonce)
            connections[endpoint] = connection
            let proof = key.proof("node", challenge: clientNonce, own: nodeNonce)
            send(.challenge(nonce: nodeNonce, proof: proof), to: endpoint)
        case let (.awaitingResponse(clientNonce, nodeNonce), .response(proof)):
            guard key.accepts(proof, from: "client", challenge: nodeNonce, own: clientNonce) else {
                refuse(endpoint, "wrong key")
                return
            }
            do {
                let pool = try description()
                connection.state = .ready
                connection.deadline = .after(seconds: Self.silenceSeconds)
                connections[endpoint] = connection
                send(.welcome(pool), to: endpoint)
                log("client \(connection.peer) connected")
            } catch {
                refuse(endpoint, "\(error)")
            }
        case let (.ready, .request(id, call)):
            connection.deadline = .after(seconds: Self.silenceSeconds)
            connections[endpoint] = connection
            if case let .read(address, count) = call {
                sendBytes(at: address, count: count, answering: id, to: endpoint)
            } else {
                send(.reply(id: id, answer(call)), to: endpoint)
            }
        case (.ready, _):
            refuse(endpoint, "an unexpected message after the handshake")
        default:
            refuse(endpoint, "no key proven (an unexpected message during the handshake)")
        }
    }

    private func send(_ message: NodeMessage, to endpoint: OpaquePointer) {
        let status = worker.post(message.encoded(), to: endpoint)
        if status != UCS_OK { drop(endpoint, because: "send failed: \(UCX.describe(status))", quietly: false) }
    }

    /// Answers a large read with the pool's bytes alongside, uncopied.
    private func sendBytes(at address: GlobalAddress, count: Int, answering id: UInt64, to endpoint: OpaquePointer) {
        do {
            // Pool memory stays mapped while the pool is open, past the closure.
            let bytes = try pool.withUnsafeMutableBytes(at: address, count: count) { UnsafeRawBufferPointer($0) }
            let status = worker.post(NodeMessage.reply(id: id, .data(count: count)).encoded(), payload: bytes, to: endpoint)
            if status != UCS_OK { drop(endpoint, because: "send failed: \(UCX.describe(status))", quietly: false) }
        } catch {
            send(.reply(id: id, failure(error)), to: endpoint)
        }
    }

    private func failure(_ error: any Error) -> NodeAnswer {
        if let error = error as? PoolError { return .failure(errno: error.errno, message: error.description) }
        return .failure(errno: EIO, message: "\(error)")
    }

    private func answer(_ call: NodeCall) -> NodeAnswer {
        do {
            switch call {
            case let .allocate(count):
                return .address(try pool.allocatePages(count: count))
            case let .free(address, count):
                try pool.freePages(at: address, count: count)
                return .done
            case let .openRegion(name):
                let region = try pool.openRegion(name: name)
                return .region(RemoteRegion(name: region.name, address: region.address, size: region.size))
            case let .createRegion(name, size):
                let region = try pool.createRegion(name: name, size: size)
                return .region(RemoteRegion(name: region.name, address: region.address, size: region.size))
            case .describe:
                return .pool(try description())
            case let .persist(address, count):
                try pool.persist(at: address, count: count)
                return .done
            case .ping:
                return .done
            case .read:
                return .failure(errno: EINVAL, message: "a read is answered with its bytes")
            }
        } catch {
            return failure(error)
        }
    }

    /// The pool as clients see it, registering shelves the pool grew since
    /// (Lunasa's lazy registration, for memory that came after the start).
    func description() throws(NetError) -> PoolDescription {
        let info = pool.info()
        for (start, bytes) in pool.dataSpans() where registered[start.shelf] == nil {
            guard let base = pool.unsafePointer(to: start) else { continue }
            let (memory, remoteKey) = try worker.register(base, length: Int(bytes))
            let persistent = info.shelves.first { $0.index == start.shelf }?.medium == .pmem
            registered[start.shelf] = (memory, RemoteShelf(index: start.shelf, start: start, bytes: bytes,
                                                           base: UInt64(UInt(bitPattern: base)),
                                                           persistent: persistent, remoteKey: remoteKey))
        }
        return PoolDescription(name: pool.name, uuid: pool.uuid, pageSize: pool.pageSize,
                               shelves: registered.keys.sorted().map { registered[$0]!.shelf })
    }
}
