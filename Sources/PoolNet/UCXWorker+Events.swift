import CUCX
#if canImport(Glibc)
import Glibc
#endif

/// What UCX's callbacks hand over while the worker progresses. The
/// callbacks only queue (UCX forbids more inside them); the worker's owner
/// takes the queues after each round of progress.
final class UCXEvents {
    /// Messages as they came, with the endpoint to answer on.
    var inbox: [(from: OpaquePointer?, bytes: [UInt8])] = []
    /// Endpoints UCX found broken (peer gone, link down), with the cause.
    var failures: [(endpoint: OpaquePointer, status: ucs_status_t)] = []
    /// Connection requests a listener received.
    var connectionRequests: [OpaquePointer] = []

    var isEmpty: Bool { inbox.isEmpty && failures.isEmpty && connectionRequests.isEmpty }

    func failure(of endpoint: OpaquePointer) -> ucs_status_t? {
        failures.first { $0.endpoint == endpoint }?.status
    }

    var context: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    static func from(_ context: UnsafeMutableRawPointer?) -> UCXEvents {
        Unmanaged<UCXEvents>.fromOpaque(context!).takeUnretainedValue()
    }
}

/// The one Active Message id of the memory-node protocol.
let nodeMessageID: UInt32 = 1

extension UCXWorker {
    /// Routes this worker's incoming messages into `events.inbox`.
    func receiveMessages(into events: UCXEvents) throws(NetError) {
        var params = ucp_am_handler_param_t()
        params.field_mask = UInt64(UCP_AM_HANDLER_PARAM_FIELD_ID.rawValue | UCP_AM_HANDLER_PARAM_FIELD_CB.rawValue
            | UCP_AM_HANDLER_PARAM_FIELD_ARG.rawValue)
        params.id = nodeMessageID
        params.cb = { context, _, _, data, length, param in
            let events = UCXEvents.from(context)
            // Messages are sent eager; a rendezvous one is not of this protocol.
            if let param, param.pointee.recv_attr & UInt64(UCP_AM_RECV_ATTR_FLAG_RNDV.rawValue) != 0 {
                events.inbox.append((param.pointee.reply_ep, []))
                return UCS_OK
            }
            let bytes = data.map { Array(UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
            events.inbox.append((param?.pointee.reply_ep, bytes))
            return UCS_OK
        }
        params.arg = events.context
        try UCX.check("ucp_worker_set_am_recv_handler", ucp_worker_set_am_recv_handler(handle, &params))
    }

    /// Sends `bytes` as one message and returns at once: the copy made here
    /// is freed when UCX is done with it, so nothing waits on a peer that
    /// stopped reading.
    func post(_ bytes: [UInt8], to endpoint: OpaquePointer) -> ucs_status_t {
        let copy = malloc(max(bytes.count, 1))!
        bytes.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        var param = ucp_request_param_t()
        param.op_attr_mask = UInt32(UCP_OP_ATTR_FIELD_FLAGS.rawValue | UCP_OP_ATTR_FIELD_CALLBACK.rawValue
            | UCP_OP_ATTR_FIELD_USER_DATA.rawValue)
        param.flags = UInt32(UCP_AM_SEND_FLAG_REPLY.rawValue | UCP_AM_SEND_FLAG_EAGER.rawValue)
        param.cb.send = { request, _, copy in
            free(copy)
            ucp_request_free(request)
        }
        param.user_data = copy
        let request = ucp_am_send_nbx(endpoint, nodeMessageID, nil, 0, copy, bytes.count, &param)
        guard let request, CUCX_ptr_is_ptr(request) != 0 else {
            free(copy)
            return request.map { CUCX_ptr_status($0) } ?? UCS_OK
        }
        return UCS_OK
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
    /// on it end with an error, and the close finishes in later progress.
    func close(_ endpoint: OpaquePointer) {
        var param = ucp_request_param_t()
        param.op_attr_mask = UInt32(UCP_OP_ATTR_FIELD_FLAGS.rawValue)
        param.flags = UInt32(UCP_EP_CLOSE_FLAG_FORCE.rawValue)
        let request = ucp_ep_close_nbx(endpoint, &param)
        _ = complete(request, by: .after(seconds: 1))
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
