import PoolCore
import Testing
import TestSupport
@testable import PoolNet
import CUCX
#if canImport(Glibc)
import Glibc
#endif

/// Who may use a node: only a client that proves it holds the key, and
/// nothing a stranger sends harms the node.
@Suite(.serialized) struct HandshakeTests {
    /// The node still serves a client with the key.
    func expectUnharmed(_ served: ServedPool) throws {
        #expect(kill(served.node!.pid, 0) == 0, "the node is gone")
        let remote = try connect(served)
        defer { remote.close() }
        let run = try remote.allocatePages(count: 1)
        try remote.write(at: run, bytes: [7])
        #expect(try remote.read(at: run, count: 1) == [7])
    }

    @Test func aWrongKeyIsRefusedOnBothSides() throws {
        let served = try ServedPool()
        let other = served.scratch.path + "/other"
        try NodeKey.create(at: other)
        let refusal = netError { _ = try connect(served, keyFile: other) }
        guard case let .refused(_, reason) = refusal else { Issue.record("\(String(describing: refusal))"); return }
        #expect(reason.contains("wrong key"))
        let log = served.node!.waitFor("poolfs: client")
        #expect(log.last?.contains("refused: wrong key") == true, "\(log)")
        try expectUnharmed(served)
    }

    @Test func keyFilesAreChecked() throws {
        let scratch = Scratch()
        let path = scratch.path + "/key"
        #expect(netError { _ = try NodeKey.load(from: path) }?.description.contains("No such file") == true)
        try NodeKey.create(at: path)
        var info = stat()
        stat(path, &info)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(netError { try NodeKey.create(at: path) }?.description.contains("exists") == true)
        chmod(path, 0o644)
        #expect(netError { _ = try NodeKey.load(from: path) }?.description.contains("readable by others") == true)
        chmod(path, 0o600)
        truncate(path, 31)
        #expect(netError { _ = try NodeKey.load(from: path) }?.description.contains("holds 31 bytes") == true)
    }

    /// A raw UCX client of the protocol, to send what a RemotePool never would.
    final class RawClient {
        let worker: UCXWorker
        let events = UCXEvents()
        let endpoint: OpaquePointer
        let node: NodeAddress

        init(_ served: ServedPool) throws {
            setenv("UCX_TLS", "tcp", 1)
            node = try NodeAddress(served.address)
            worker = try UCXWorker(serving: false)
            try worker.receiveMessages(into: events)
            endpoint = try worker.connect(to: node, events: events)
        }

        deinit { worker.close(endpoint) }

        func send(_ bytes: [UInt8]) { #expect(worker.post(bytes, to: endpoint) == UCS_OK) }

        func answer(within seconds: Double) -> Result<NodeMessage, NetError> {
            Result { () throws(NetError) in
                try RemoteLink.awaitMessage(on: endpoint, node, "test", worker, events, by: .after(seconds: seconds))
            }
        }
    }

    @Test func callsBeforeTheKeyIsProvenAreRefused() throws {
        let served = try ServedPool()
        let client = try RawClient(served)
        client.send(NodeMessage.request(id: 1, .allocate(count: 1)).encoded())
        guard case let .failure(.refused(_, reason)) = client.answer(within: 5) else { Issue.record("not refused"); return }
        #expect(reason.contains("no key proven"))
        #expect(served.node!.waitFor("poolfs: client").last?.contains("no key proven") == true)
        try expectUnharmed(served)
    }

    @Test func aHandshakeLeftHalfwayIsDropped() throws {
        let served = try ServedPool()
        let client = try RawClient(served)
        client.send(NodeMessage.hello(version: NodeMessage.version, nonce: NodeKey.randomBytes(32)).encoded())
        guard case .success(.challenge) = client.answer(within: 5) else { Issue.record("no challenge"); return }
        // No response follows: the node gives up after its handshake time.
        let log = served.node!.waitFor("poolfs: client")
        #expect(log.last?.contains("no complete handshake within 2 s") == true, "\(log)")
        try expectUnharmed(served)
    }

    @Test func garbageIsRefusedAndHarmsNothing() throws {
        let served = try ServedPool()
        let client = try RawClient(served)
        client.send([0xff] + NodeKey.randomBytes(300))
        guard case let .failure(.refused(_, reason)) = client.answer(within: 5) else { Issue.record("not refused"); return }
        #expect(reason.contains("protocol violation"))
        let old = try RawClient(served)
        old.send(NodeMessage.hello(version: 99, nonce: NodeKey.randomBytes(32)).encoded())
        guard case let .failure(.refused(_, versionReason)) = old.answer(within: 5) else { Issue.record("not refused"); return }
        #expect(versionReason.contains("protocol version 99"))

        // Bytes that are not UCX at all, straight onto the node's port.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(served.port)!.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(connected == 0)
        let junk = NodeKey.randomBytes(4096)
        _ = junk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        try expectUnharmed(served)
    }
}

/// What a hostile UCX peer tries first: one-sided writes and reads at
/// addresses of its choosing. The node offers UCX no remote memory access,
/// so there is nothing to reach: a write to an unmapped address would kill
/// a node that served it (UCX over TCP emulates it with a memcpy).
@Suite(.serialized) struct OneSidedAccessTests {
    @Test func oneSidedWritesFromAPeerReachNothing() throws {
        let served = try ServedPool()
        setenv("UCX_TLS", "tcp", 1)
        var config: OpaquePointer?
        #expect(ucp_config_read(nil, nil, &config) == UCS_OK)
        var params = ucp_params_t()
        params.field_mask = UInt64(UCP_PARAM_FIELD_FEATURES.rawValue)
        params.features = UInt64(UCP_FEATURE_RMA.rawValue | UCP_FEATURE_AM.rawValue | UCP_FEATURE_AMO64.rawValue)
        var context: OpaquePointer?
        #expect(ucp_init(&params, config, &context) == UCS_OK)
        ucp_config_release(config)
        defer { ucp_cleanup(context) }
        var workerParams = ucp_worker_params_t()
        var worker: OpaquePointer?
        #expect(ucp_worker_create(context, &workerParams, &worker) == UCS_OK)
        defer { ucp_worker_destroy(worker) }

        var endpointParams = ucp_ep_params_t()
        endpointParams.field_mask = UInt64(UCP_EP_PARAM_FIELD_FLAGS.rawValue | UCP_EP_PARAM_FIELD_SOCK_ADDR.rawValue
            | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE.rawValue)
        endpointParams.flags = UInt32(UCP_EP_PARAMS_FLAGS_CLIENT_SERVER.rawValue)
        endpointParams.err_mode = UCP_ERR_HANDLING_MODE_PEER
        var endpoint: OpaquePointer?
        let address = try NodeAddress(served.address)
        let created = address.withSocketAddress { socketAddress in
            endpointParams.sockaddr = socketAddress
            return ucp_ep_create(worker, &endpointParams, &endpoint)
        }
        #expect(created == UCS_OK)

        // A key for memory of its own, unpacked on the node's endpoint: the
        // node never hands out one of its own.
        var buffer = [UInt8](repeating: 0x5a, count: 4096)
        var memory: OpaquePointer?
        var mapParams = ucp_mem_map_params_t()
        mapParams.field_mask = UInt64(UCP_MEM_MAP_PARAM_FIELD_ADDRESS.rawValue | UCP_MEM_MAP_PARAM_FIELD_LENGTH.rawValue)
        buffer.withUnsafeMutableBytes { mapParams.address = $0.baseAddress }
        mapParams.length = 4096
        #expect(ucp_mem_map(context, &mapParams, &memory) == UCS_OK)
        defer { ucp_mem_unmap(context, memory) }
        var packed: UnsafeMutableRawPointer?
        var size = 0
        #expect(ucp_rkey_pack(context, memory, &packed, &size) == UCS_OK)
        var key: OpaquePointer?
        let unpacked = ucp_ep_rkey_unpack(endpoint, packed, &key)
        ucp_rkey_buffer_release(packed)

        if unpacked == UCS_OK, let key {
            // Into the node's first page of address space: a segfault there
            // if UCX carried it out.
            var param = ucp_request_param_t()
            let request = buffer.withUnsafeBytes { ucp_put_nbx(endpoint, $0.baseAddress, 4096, 0x1000, key, &param) }
            var flushParam = ucp_request_param_t()
            let flush = ucp_ep_flush_nbx(endpoint, &flushParam)
            let deadline = Deadline.after(seconds: 2)
            for pending in [request, flush] {
                guard let pending, CUCX_ptr_is_ptr(pending) != 0 else { continue }
                while ucp_request_check_status(pending) == UCS_INPROGRESS && !deadline.hasPassed { ucp_worker_progress(worker) }
                if ucp_request_check_status(pending) != UCS_INPROGRESS { ucp_request_free(pending) }
            }
            ucp_rkey_destroy(key)
        }
        var closeParam = ucp_request_param_t()
        closeParam.op_attr_mask = UInt32(UCP_OP_ATTR_FIELD_FLAGS.rawValue)
        closeParam.flags = UInt32(UCP_EP_CLOSE_FLAG_FORCE.rawValue)
        if let closing = ucp_ep_close_nbx(endpoint, &closeParam), CUCX_ptr_is_ptr(closing) != 0 {
            let deadline = Deadline.after(seconds: 2)
            while ucp_request_check_status(closing) == UCS_INPROGRESS && !deadline.hasPassed { ucp_worker_progress(worker) }
            ucp_request_free(closing)
        }

        // The node is alive and serves a client with the key.
        #expect(kill(served.node!.pid, 0) == 0)
        let remote = try connect(served)
        defer { remote.close() }
        #expect(try remote.allocatePages(count: 1) != .null)
    }
}
