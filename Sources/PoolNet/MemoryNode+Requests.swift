import CUCX
import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// The handshake and the calls, as the node answers them.
extension MemoryNode {
    func receive(_ arrival: Arrival, on endpoint: OpaquePointer) {
        guard var connection = connections[endpoint], !connection.isRefused else {
            worker.release(arrival.payload)
            return
        }
        let message: NodeMessage
        do {
            message = try NodeMessage.decode(arrival.message)
        } catch {
            worker.release(arrival.payload)
            refuse(endpoint, "\(error)")
            return
        }
        // Bytes come only beside a write of a client that proved its key.
        if case (.ready, .request(let id, .write(let address, let count))) = (connection.state, message) {
            connection.deadline = .after(seconds: Self.silenceSeconds)
            connections[endpoint] = connection
            startWrite(arrival.payload, at: address, count: count, answering: id, on: endpoint)
            return
        }
        worker.release(arrival.payload)
        switch (connection.state, message) {
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
            connection.state = .ready
            connection.deadline = .after(seconds: Self.silenceSeconds)
            connections[endpoint] = connection
            send(.welcome(description()), to: endpoint)
            log("client \(connection.peer) connected")
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

    /// Receives a write's bytes straight into pool memory; the answer goes
    /// once they are there (finishWrite).
    private func startWrite(_ payload: Arrival.Payload, at address: GlobalAddress, count: Int, answering id: UInt64,
                            on endpoint: OpaquePointer) {
        let target: UnsafeMutableRawBufferPointer
        do {
            // Pool memory stays mapped while the pool is open, past the closure.
            target = try pool.withUnsafeMutableBytes(at: address, count: count) { $0 }
        } catch {
            worker.release(payload)
            send(.reply(id: id, failure(error)), to: endpoint)
            return
        }
        let token = nextToken
        nextToken &+= 1
        arrivingWrites[token] = ArrivingWrite(endpoint: endpoint, id: id, address: address, count: count)
        if !worker.receive(payload, into: target, token: token, events: events) {
            arrivingWrites[token] = nil
            refuse(endpoint, "a write of \(count) bytes came with other bytes")
        }
    }

    func finishWrite(_ token: Int, _ status: ucs_status_t) {
        guard let write = arrivingWrites.removeValue(forKey: token), connections[write.endpoint] != nil else { return }
        guard status == UCS_OK else {
            drop(write.endpoint, because: "a write's bytes did not arrive (\(UCX.describe(status)))", quietly: false)
            return
        }
        do {
            try pool.persist(at: write.address, count: write.count)
            send(.reply(id: write.id, .done), to: write.endpoint)
        } catch {
            send(.reply(id: write.id, failure(error)), to: write.endpoint)
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
            case let .destroyRegion(name):
                try pool.destroyRegion(name: name)
                return .done
            case .describe:
                return .pool(description())
            case .ping:
                return .done
            case let .compareAndSwap(address, expected, desired):
                return .word(try pool.compareAndSwap(at: address, expected: expected, desired: desired).original)
            case let .fetchAndAdd(address, value):
                return .word(try pool.fetchAndAdd(at: address, value))
            case .read, .write:
                return .failure(errno: EINVAL, message: "bytes go beside a read's answer and a write's call")
            }
        } catch {
            return failure(error)
        }
    }

    /// The pool as clients see it: each shelf's data pages.
    func description() -> PoolDescription {
        PoolDescription(name: pool.name, uuid: pool.uuid, pageSize: pool.pageSize,
                        shelves: pool.dataSpans().map { RemoteShelf(index: $0.start.shelf, start: $0.start, bytes: $0.bytes) })
    }
}

/// A write whose bytes are on their way into pool memory.
struct ArrivingWrite {
    let endpoint: OpaquePointer
    let id: UInt64
    let address: GlobalAddress
    let count: Int
}
