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
            worker = try UCXWorker(wakeup: false)
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
