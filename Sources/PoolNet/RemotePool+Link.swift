import CUCX
import PoolCore

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
            link = try RemoteLink.open(to: node, key: key, worker: worker, events: events, by: deadline,
                                       expecting: poolUUID)
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

    /// `leaving`: on purpose (close), not after a failure.
    func dropLink(leaving: Bool = false) {
        guard let link else { return }
        self.link = nil
        link.close(worker, leaving: leaving)
        worker.discardInbox(of: events)
        events.failures.removeAll()
    }

    /// One call and its answer; the node's own error becomes `.node`.
    /// `buffer` receives the bytes that come with a `.data` answer.
    func exchange(_ call: NodeCall, _ what: String, on link: RemoteLink, by deadline: Deadline,
                  into buffer: UnsafeMutableRawBufferPointer? = nil) throws(NetError) -> NodeAnswer {
        let id = nextRequest
        nextRequest &+= 1
        try RemoteLink.send(.request(id: id, call), on: link.endpoint, node, worker)
        let (message, payload) = try RemoteLink.awaitArrival(on: link.endpoint, node, what, worker, events, by: deadline) {
            // A late answer to a call that timed out before is dropped.
            if case .reply(id, _) = $0 { true } else { false }
        }
        guard case let .reply(_, answer) = message else { throw .protocolViolation("a reply expected") }
        if case let .failure(code, text) = answer { throw .node(node.text, errno: code, message: text) }
        if case .data = answer {
            guard let buffer else {
                worker.release(payload)
                throw .protocolViolation("bytes that no call asked for")
            }
            let status = worker.receive(payload, into: buffer, by: deadline)
            if status == UCS_INPROGRESS { throw .timedOut(node: node.text, what: what, seconds: deadline.seconds) }
            if status != UCS_OK { throw .unreachable(node: node.text, reason: UCX.describe(status)) }
        } else {
            worker.release(payload)
        }
        return answer
    }

    /// Asks the node for its shelves again, after the pool grew.
    func refreshShelves(_ link: RemoteLink, by deadline: Deadline) throws(NetError) {
        guard case let .pool(pool) = try exchange(.describe, "describe", on: link, by: deadline) else {
            throw .protocolViolation("the node answered describe with something else")
        }
        link.pool = pool
        try link.unpackKeys(worker)
    }

    /// The shelf, remote address and key for `[address, address+count)`,
    /// which must lie in one shelf's data pages; a shelf not known yet is
    /// looked up once.
    func locate(_ address: GlobalAddress, count: Int, on link: RemoteLink,
                by deadline: Deadline) throws(NetError) -> (shelf: RemoteShelf, remote: UInt64, key: OpaquePointer) {
        if !link.pool.shelves.contains(where: { $0.index == address.shelf }) {
            try refreshShelves(link, by: deadline)
        }
        guard let shelf = link.pool.shelves.first(where: { $0.index == address.shelf }),
              let key = link.remoteKeys[shelf.index]
        else { throw .invalidAddress(address, reason: "the node's pool has no shelf \(address.shelf)") }
        guard shelf.contains(address, count: count) else {
            throw .invalidAddress(address, reason: "\(count) bytes there fall outside shelf \(shelf.index)'s data pages")
        }
        return (shelf, shelf.remoteAddress(of: address), key)
    }

    /// Waits for one-sided requests; a missed deadline or an error drops the link.
    func finish(_ requests: [UnsafeMutableRawPointer?], _ what: String, by deadline: Deadline) throws(NetError) {
        let status = worker.completeAll(requests, by: deadline)
        if status == UCS_OK { return }
        if status == UCS_INPROGRESS {
            throw .timedOut(node: node.text, what: what, seconds: deadline.seconds)
        }
        throw .unreachable(node: node.text, reason: UCX.describe(status))
    }
}
