import CUCX
import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// The connection under the calls: made again when gone, dropped on any
/// failure or missed deadline. Everything here runs under `lock`.
extension RemotePool {
    /// Runs `body` on a live link, connecting first if needed, all within
    /// one deadline. A failure that leaves the connection in doubt drops it.
    func withLink<R>(_ what: String, _ body: (RemoteLink, Deadline) throws(NetError) -> R) throws(NetError) -> R {
        guard !isClosed else { throw .closed(node: node.text) }
        let deadline = Deadline.after(seconds: deadlineSeconds)
        let link: RemoteLink
        if let current = self.link {
            link = current
        } else {
            link = try connect(by: deadline)
            self.link = link
        }
        do {
            let result = try body(link, deadline)
            lastTraffic = Deadline.now()
            return result
        } catch {
            switch error {
            case .node, .invalidAddress, .invalidSize: break
            default: dropLink()
            }
            throw error
        }
    }

    /// Connects again, trying until the deadline while the node turns the
    /// connection down at once: a node just back from a stop or a restart
    /// may still be clearing what it left. (A call is never repeated: it
    /// may have been carried out.)
    private func connect(by deadline: Deadline) throws(NetError) -> RemoteLink {
        while true {
            do throws(NetError) {
                return try RemoteLink.open(to: node, key: key, worker: worker, events: events, by: deadline,
                                           expecting: poolUUID)
            } catch {
                guard case .unreachable = error, !deadline.hasPassed else { throw error }
                var pause = timespec(tv_sec: 0, tv_nsec: 20_000_000)
                nanosleep(&pause, nil)
            }
        }
    }

    /// `leaving`: on purpose (close), not after a failure.
    func dropLink(leaving: Bool = false) {
        guard let link else { return }
        self.link = nil
        link.close(worker, leaving: leaving)
        worker.discardInbox(of: events)
        events.failures.removeAll()
        events.received.removeAll()
    }

    /// One call and its answer.
    func exchange(_ call: NodeCall, _ what: String, on link: RemoteLink,
                  by deadline: Deadline) throws(NetError) -> NodeAnswer {
        try exchange([Outgoing(call: call)], what, on: link, by: deadline)[0]
    }

    /// A call on its way: the bytes that go beside it (a write's) and the
    /// buffer for those that come back (a read's).
    struct Outgoing {
        var call: NodeCall
        var payload: UnsafeRawBufferPointer? = nil
        var into: UnsafeMutableRawBufferPointer? = nil
        /// The registration of `payload` or `into`, where it has one.
        var memory: ucp_mem_h? = nil
    }

    /// Calls in flight at once (a queue depth of `calls.count`), each
    /// answered and its bytes received before it returns; the node's own
    /// error becomes `.node`, the first one thrown once all are in.
    func exchange(_ calls: [Outgoing], _ what: String, on link: RemoteLink,
                  by deadline: Deadline) throws(NetError) -> [NodeAnswer] {
        var index: [UInt64: Int] = [:]
        for (i, outgoing) in calls.enumerated() {
            let id = nextRequest
            nextRequest &+= 1
            index[id] = i
            let status = worker.post(NodeMessage.request(id: id, outgoing.call).encoded(), payload: outgoing.payload,
                                     memory: outgoing.memory, to: link.endpoint)
            guard status == UCS_OK else { throw .unreachable(node: node.text, reason: UCX.describe(status)) }
        }
        var answers = [NodeAnswer?](repeating: nil, count: calls.count)
        var waiting = calls.count
        var receiving = Set<Int>()
        var firstError: NetError?
        var spins = 0
        while waiting > 0 || !receiving.isEmpty {
            worker.progress()
            while !events.inbox.isEmpty {
                let arrival = events.inbox.removeFirst()
                let message = try decode(arrival)
                // A late answer to a call that timed out before is dropped.
                guard case let .reply(id, answer) = message, let i = index[id], answers[i] == nil else {
                    worker.release(arrival.payload)
                    continue
                }
                answers[i] = answer
                waiting -= 1
                switch answer {
                case let .data(count):
                    guard let buffer = calls[i].into, buffer.count == count,
                          worker.receive(arrival.payload, into: buffer, memory: calls[i].memory,
                                         token: Int(truncatingIfNeeded: id), events: events)
                    else {
                        worker.release(arrival.payload)
                        throw .protocolViolation("a read answered with \(count) bytes")
                    }
                    receiving.insert(Int(truncatingIfNeeded: id))
                case let .failure(code, text):
                    worker.release(arrival.payload)
                    firstError = firstError ?? .node(node.text, errno: code, message: text)
                default:
                    worker.release(arrival.payload)
                }
            }
            let received = events.received
            events.received.removeAll()
            for (token, status) in received where receiving.contains(token) {
                receiving.remove(token)
                if status != UCS_OK { throw .unreachable(node: node.text, reason: UCX.describe(status)) }
            }
            if let status = events.failure(of: link.endpoint) {
                throw .unreachable(node: node.text, reason: UCX.describe(status))
            }
            spins &+= 1
            if spins & 63 == 0, deadline.hasPassed {
                throw .timedOut(node: node.text, what: what, seconds: deadline.seconds)
            }
        }
        if let firstError { throw firstError }
        return answers.map { $0! }
    }

    private func decode(_ arrival: Arrival) throws(NetError) -> NodeMessage {
        do throws(NetError) {
            let message = try NodeMessage.decode(arrival.message)
            if case let .refusal(reason) = message { throw NetError.refused(node: node.text, reason: reason) }
            return message
        } catch {
            worker.release(arrival.payload)
            throw error
        }
    }

    /// Asks the node for its shelves again, after the pool grew.
    func refreshShelves(_ link: RemoteLink, by deadline: Deadline) throws(NetError) {
        guard case let .pool(pool) = try exchange(.describe, "describe", on: link, by: deadline) else {
            throw .protocolViolation("the node answered describe with something else")
        }
        link.pool = pool
    }

    /// Checks that `[address, address+count)` lies in one shelf's data
    /// pages before anything is sent; a shelf not known yet is looked up once.
    func check(_ address: GlobalAddress, count: Int, on link: RemoteLink, by deadline: Deadline) throws(NetError) {
        guard count >= 0, count <= Int(Int32.max) else {
            throw .invalidSize("\(count) bytes", reason: "one transfer moves 0 to \(Int32.max) bytes")
        }
        if !link.pool.shelves.contains(where: { $0.index == address.shelf }) {
            try refreshShelves(link, by: deadline)
        }
        guard let shelf = link.pool.shelves.first(where: { $0.index == address.shelf }) else {
            throw .invalidAddress(address, reason: "the node's pool has no shelf \(address.shelf)")
        }
        guard shelf.contains(address, count: count) else {
            throw .invalidAddress(address, reason: "\(count) bytes there fall outside shelf \(shelf.index)'s data pages")
        }
    }
}
