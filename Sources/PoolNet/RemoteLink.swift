import CUCX
import PoolCore

/// One proven connection to a memory node: its endpoint and the pool it serves.
final class RemoteLink {
    let endpoint: OpaquePointer
    var pool: PoolDescription

    private init(endpoint: OpaquePointer, pool: PoolDescription) {
        self.endpoint = endpoint
        self.pool = pool
    }

    /// Connects and runs the handshake: hello with the client's nonce; the
    /// node's challenge with its proof over that nonce, checked here; the
    /// client's proof over the node's nonce; the welcome. `expecting`: the
    /// UUID the pool must have (a node restarted on another pool is refused,
    /// since every address would now mean other bytes).
    static func open(to node: NodeAddress, key: NodeKey, worker: UCXWorker, events: UCXEvents,
                     by deadline: Deadline, expecting uuid: String?) throws(NetError) -> RemoteLink {
        worker.discardInbox(of: events)
        events.failures.removeAll()
        let endpoint = try worker.connect(to: node, events: events)
        do throws(NetError) {
            let clientNonce = NodeKey.randomBytes(NodeMessage.nonceBytes)
            try send(.hello(version: NodeMessage.version, nonce: clientNonce), on: endpoint, node, worker)
            guard case let .challenge(nodeNonce, nodeProof) = try awaitMessage(on: endpoint, node, "the handshake",
                                                                             worker, events, by: deadline)
            else { throw NetError.protocolViolation("the node did not answer the hello with a challenge") }
            guard nodeNonce.count == NodeMessage.nonceBytes,
                  key.accepts(nodeProof, from: "node", challenge: clientNonce, own: nodeNonce)
            else {
                // Told to the node too, so that both sides log the refusal.
                try? send(.refusal("wrong key"), on: endpoint, node, worker)
                flush(endpoint, worker)
                throw NetError.refused(node: node.text, reason: "wrong key (the node holds another)")
            }
            try send(.response(proof: key.proof("client", challenge: nodeNonce, own: clientNonce)),
                     on: endpoint, node, worker)
            guard case let .welcome(pool) = try awaitMessage(on: endpoint, node, "the handshake", worker, events,
                                                              by: deadline)
            else { throw NetError.protocolViolation("the node did not answer the key's proof with a welcome") }
            if let uuid, pool.uuid != uuid {
                throw NetError.refused(node: node.text, reason: "it now serves another pool (\(pool.name), \(pool.uuid))")
            }
            return RemoteLink(endpoint: endpoint, pool: pool)
        } catch {
            worker.close(endpoint)
            throw error
        }
    }

    /// Closes the endpoint without waiting on the node (what is in flight
    /// on it ends with an error). `leaving`: the node is told first, if it
    /// listens, that the client leaves on purpose.
    func close(_ worker: UCXWorker, leaving: Bool) {
        if leaving, worker.post(NodeMessage.goodbye.encoded(), to: endpoint) == UCS_OK {
            RemoteLink.flush(endpoint, worker)
        }
        worker.close(endpoint)
    }

    /// Waits a moment for what was posted on `endpoint` to leave.
    static func flush(_ endpoint: OpaquePointer, _ worker: UCXWorker) {
        var param = ucp_request_param_t()
        _ = worker.complete(ucp_ep_flush_nbx(endpoint, &param), by: .after(seconds: 0.2))
    }

    static func send(_ message: NodeMessage, on endpoint: OpaquePointer, _ node: NodeAddress,
                     _ worker: UCXWorker) throws(NetError) {
        let status = worker.post(message.encoded(), to: endpoint)
        guard status == UCS_OK else { throw .unreachable(node: node.text, reason: UCX.describe(status)) }
    }

    /// Progresses until a message arrives on `endpoint` (the handshake's),
    /// it fails, or the deadline passes. A refusal becomes `.refused`.
    static func awaitMessage(on endpoint: OpaquePointer, _ node: NodeAddress, _ what: String, _ worker: UCXWorker,
                             _ events: UCXEvents, by deadline: Deadline) throws(NetError) -> NodeMessage {
        var spins = 0
        while true {
            worker.progress()
            if !events.inbox.isEmpty {
                let arrival = events.inbox.removeFirst()
                worker.release(arrival.payload)
                let message = try NodeMessage.decode(arrival.message)
                if case let .refusal(reason) = message { throw .refused(node: node.text, reason: reason) }
                return message
            }
            if let status = events.failure(of: endpoint) {
                throw .unreachable(node: node.text, reason: UCX.describe(status))
            }
            spins &+= 1
            if spins & 63 == 0, deadline.hasPassed {
                throw .timedOut(node: node.text, what: what, seconds: deadline.seconds)
            }
        }
    }
}
