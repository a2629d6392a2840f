import CUCX
#if canImport(Glibc)
import Glibc
#endif

/// What UCX's callbacks hand over while the worker progresses. The
/// callbacks only queue (UCX forbids more inside them); the worker's owner
/// takes the queues after each round of progress.
final class UCXEvents {
    /// Messages as they came, with the endpoint to answer on.
    var inbox: [Arrival] = []
    /// Endpoints UCX found broken (peer gone, link down), with the cause.
    var failures: [(endpoint: OpaquePointer, status: ucs_status_t)] = []
    /// Connection requests a listener received.
    var connectionRequests: [OpaquePointer] = []
    /// Bytes received into place (`UCXWorker.receive(_:into:then:)`), by token.
    var received: [(token: Int, status: ucs_status_t)] = []

    var isEmpty: Bool { inbox.isEmpty && failures.isEmpty && connectionRequests.isEmpty && received.isEmpty }

    func failure(of endpoint: OpaquePointer) -> ucs_status_t? {
        failures.first { $0.endpoint == endpoint }?.status
    }

    var context: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    static func from(_ context: UnsafeMutableRawPointer?) -> UCXEvents {
        Unmanaged<UCXEvents>.fromOpaque(context!).takeUnretainedValue()
    }
}

/// One message: its protocol bytes and, for a read's answer, the bytes read,
/// which a large read leaves at the sender until the receiver names the
/// buffer to put them in (UCX's rendezvous).
struct Arrival {
    enum Payload {
        case none
        case bytes([UInt8])
        case rendezvous(descriptor: UnsafeMutableRawPointer, count: Int)
    }

    let from: OpaquePointer?
    let message: [UInt8]
    let payload: Payload
}

/// The one Active Message id of the memory-node protocol.
let nodeMessageID: UInt32 = 1
/// No message of the protocol is longer; a longer one is not copied.
let longestMessage = 1 << 16

extension UCXWorker {
    /// Routes this worker's incoming messages into `events.inbox`.
    func receiveMessages(into events: UCXEvents) throws(NetError) {
        var params = ucp_am_handler_param_t()
        params.field_mask = UInt64(UCP_AM_HANDLER_PARAM_FIELD_ID.rawValue | UCP_AM_HANDLER_PARAM_FIELD_CB.rawValue
            | UCP_AM_HANDLER_PARAM_FIELD_ARG.rawValue)
        params.id = nodeMessageID
        // The message is in the header when bytes come with it, else in the data.
        params.cb = { context, header, headerLength, data, length, param in
            let events = UCXEvents.from(context)
            let from = param?.pointee.reply_ep
            let isRendezvous = param.map { $0.pointee.recv_attr & UInt64(UCP_AM_RECV_ATTR_FLAG_RNDV.rawValue) != 0 } ?? false
            // Messages alone are sent eager and are short; anything else
            // arrives empty, which no decoder accepts.
            guard headerLength > 0, let header else {
                let fits = !isRendezvous && length <= longestMessage
                let bytes = fits ? data.map { Array(UnsafeRawBufferPointer(start: $0, count: length)) } ?? [] : []
                events.inbox.append(Arrival(from: from, message: bytes, payload: .none))
                return UCS_OK
            }
            let message = headerLength <= longestMessage ? Array(UnsafeRawBufferPointer(start: header, count: headerLength)) : []
            if isRendezvous, let data {
                events.inbox.append(Arrival(from: from, message: message, payload: .rendezvous(descriptor: data, count: length)))
                return UCS_INPROGRESS
            }
            let bytes = data.map { Array(UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
            events.inbox.append(Arrival(from: from, message: message, payload: .bytes(bytes)))
            return UCS_OK
        }
        params.arg = events.context
        try UCX.check("ucp_worker_set_am_recv_handler", ucp_worker_set_am_recv_handler(handle, &params))
    }

    /// Bytes beside a message up to this size go eager; larger ones by rendezvous.
    static let eagerBytes = 32 << 10

    /// Sends `bytes` as one message and returns at once: the copy made here
    /// is freed when UCX is done with it, so nothing waits on a peer that
    /// stopped reading. `payload` (pool memory, which stays mapped) goes
    /// with it uncopied, by rendezvous when large.
    /// `memory`: the payload's registration, where it has one.
    func post(_ bytes: [UInt8], payload: UnsafeRawBufferPointer? = nil, memory: ucp_mem_h? = nil,
              to endpoint: OpaquePointer) -> ucs_status_t {
        let copy = malloc(max(bytes.count, 1))!
        bytes.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        var param = ucp_request_param_t()
        param.op_attr_mask = UInt32(UCP_OP_ATTR_FIELD_FLAGS.rawValue | UCP_OP_ATTR_FIELD_CALLBACK.rawValue
            | UCP_OP_ATTR_FIELD_USER_DATA.rawValue)
        // Small bytes go eager, with the message: left to UCX, 4 KiB went
        // by rendezvous (one more round trip) and reads ran at 0.7x.
        let eager = (payload?.count ?? 0) <= Self.eagerBytes
        param.flags = UInt32(UCP_AM_SEND_FLAG_REPLY.rawValue | (eager ? UCP_AM_SEND_FLAG_EAGER.rawValue : 0))
        param.cb.send = { request, _, copy in
            free(copy)
            ucp_request_free(request)
        }
        param.user_data = copy
        if let memory {
            param.op_attr_mask |= UInt32(UCP_OP_ATTR_FIELD_MEMH.rawValue)
            param.memh = memory
        }
        let request = if let payload {
            ucp_am_send_nbx(endpoint, nodeMessageID, copy, bytes.count, payload.baseAddress, payload.count, &param)
        } else {
            ucp_am_send_nbx(endpoint, nodeMessageID, nil, 0, copy, bytes.count, &param)
        }
        guard let request, CUCX_ptr_is_ptr(request) != 0 else {
            free(copy)
            return request.map { CUCX_ptr_status($0) } ?? UCS_OK
        }
        return UCS_OK
    }

    /// Starts receiving a message's bytes into `target` (pool memory, or a
    /// caller's buffer that outlives the wait) without waiting:
    /// `events.received` gets `token` when they are there. Returns false if nothing will come (then `token`
    /// is not reported): bytes of the wrong size, or a failed start.
    func receive(_ payload: Arrival.Payload, into target: UnsafeMutableRawBufferPointer, memory: ucp_mem_h? = nil,
                 token: Int, events: UCXEvents) -> Bool {
        switch payload {
        case .none:
            guard target.isEmpty else { return false }
        case let .bytes(bytes):
            guard bytes.count == target.count else { return false }
            bytes.withUnsafeBytes { target.copyMemory(from: $0) }
        case let .rendezvous(descriptor, count):
            guard count == target.count else {
                release(payload)
                return false
            }
            final class Pending {
                let events: UCXEvents, token: Int
                init(_ events: UCXEvents, _ token: Int) { self.events = events; self.token = token }
            }
            let pending = Unmanaged.passRetained(Pending(events, token)).toOpaque()
            var param = ucp_request_param_t()
            param.op_attr_mask = UInt32(UCP_OP_ATTR_FIELD_CALLBACK.rawValue | UCP_OP_ATTR_FIELD_USER_DATA.rawValue)
            param.cb.recv_am = { request, status, _, pending in
                let done = Unmanaged<Pending>.fromOpaque(pending!).takeRetainedValue()
                done.events.received.append((done.token, status))
                ucp_request_free(request)
            }
            param.user_data = pending
            if let memory {
                param.op_attr_mask |= UInt32(UCP_OP_ATTR_FIELD_MEMH.rawValue)
                param.memh = memory
            }
            let request = ucp_am_recv_data_nbx(handle, descriptor, target.baseAddress, count, &param)
            if let request, CUCX_ptr_is_ptr(request) != 0 { return true }
            Unmanaged<Pending>.fromOpaque(pending).release()
            let status = request.map { CUCX_ptr_status($0) } ?? UCS_OK
            guard status == UCS_OK else { return false }
        }
        events.received.append((token, UCS_OK))
        return true
    }

    /// Empties `events.inbox`, letting go of what came with its messages.
    func discardInbox(of events: UCXEvents) {
        for arrival in events.inbox { release(arrival.payload) }
        events.inbox.removeAll()
    }

    /// Lets go of bytes nobody will receive.
    func release(_ payload: Arrival.Payload) {
        if case let .rendezvous(descriptor, _) = payload { ucp_am_data_release(handle, descriptor) }
    }

    /// A client endpoint to `address`, its failures reported into `events`.
    func connect(to address: NodeAddress, events: UCXEvents) throws(NetError) -> OpaquePointer {
        var params = endpointParameters(events: events)
        params.field_mask |= UInt64(UCP_EP_PARAM_FIELD_FLAGS.rawValue | UCP_EP_PARAM_FIELD_SOCK_ADDR.rawValue)
        params.flags = UInt32(UCP_EP_PARAMS_FLAGS_CLIENT_SERVER.rawValue)
        var endpoint: OpaquePointer?
        let status = address.withSocketAddress { socketAddress in
            params.sockaddr = socketAddress
            return ucp_ep_create(handle, &params, &endpoint)
        }
        guard status == UCS_OK, let endpoint else { throw UCX.error("ucp_ep_create", status) }
        return endpoint
    }

    /// The server's endpoint for a connection request a listener queued.
    func accept(_ request: OpaquePointer, events: UCXEvents) throws(NetError) -> OpaquePointer {
        var params = endpointParameters(events: events)
        params.field_mask |= UInt64(UCP_EP_PARAM_FIELD_CONN_REQUEST.rawValue)
        params.conn_request = request
        var endpoint: OpaquePointer?
        let status = ucp_ep_create(handle, &params, &endpoint)
        guard status == UCS_OK, let endpoint else { throw UCX.error("ucp_ep_create", status) }
        return endpoint
    }

    private func endpointParameters(events: UCXEvents) -> ucp_ep_params_t {
        var params = ucp_ep_params_t()
        params.field_mask = UInt64(UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE.rawValue | UCP_EP_PARAM_FIELD_ERR_HANDLER.rawValue)
        params.err_mode = UCP_ERR_HANDLING_MODE_PEER
        params.err_handler.cb = { context, endpoint, status in
            guard let endpoint else { return }
            UCXEvents.from(context).failures.append((endpoint, status))
        }
        params.err_handler.arg = events.context
        return params
    }

    /// Closes `endpoint` without waiting on its peer: outstanding requests
    /// on it end with an error. `waiting`: returns once the close is done
    /// (at most a second); otherwise it finishes in later progress, which
    /// a node must not stall for (a stopped client's close could hold up
    /// everyone else's calls).
    func close(_ endpoint: OpaquePointer, waiting: Bool = true) {
        var param = ucp_request_param_t()
        param.op_attr_mask = UInt32(UCP_OP_ATTR_FIELD_FLAGS.rawValue)
        param.flags = UInt32(UCP_EP_CLOSE_FLAG_FORCE.rawValue)
        let request = ucp_ep_close_nbx(endpoint, &param)
        _ = complete(request, by: .after(seconds: waiting ? 1 : 0))
        reap()
    }

    /// A listener on `address` whose connection requests go into `events`.
    func listen(on address: NodeAddress, events: UCXEvents) throws(NetError) -> OpaquePointer {
        var params = ucp_listener_params_t()
        params.field_mask = UInt64(UCP_LISTENER_PARAM_FIELD_SOCK_ADDR.rawValue | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER.rawValue)
        params.conn_handler.cb = { request, context in
            guard let request else { return }
            UCXEvents.from(context).connectionRequests.append(request)
        }
        params.conn_handler.arg = events.context
        var listener: OpaquePointer?
        let status = address.withSocketAddress { socketAddress in
            params.sockaddr = socketAddress
            return ucp_listener_create(handle, &params, &listener)
        }
        guard status == UCS_OK, let listener else {
            if status == UCS_ERR_BUSY { throw .transport(call: "listen", status: "\(address) is in use by another program") }
            throw UCX.error("ucp_listener_create on \(address)", status)
        }
        return listener
    }

    func reject(_ request: OpaquePointer, listener: OpaquePointer) {
        ucp_listener_reject(listener, request)
    }
}
