import CUCX
import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// A memory node: serves an open pool to clients on other machines. They
/// prove they hold the pool's key, then call on the node to allocate and
/// free page runs, open regions, and read, write and CAS the bytes, which
/// travel beside the calls through UCX (NodeCall). The pool stays an
/// ordinary pool: local users and a mount of it keep working beside the node.
///
/// One thread serves: it keeps UCX's worker progressing while there is
/// traffic (waking on the worker's event descriptor for each message cost
/// round trips several times over) and sleeps on that descriptor only
/// after a spell of none.
public final class MemoryNode {
    /// How long a new connection has to complete the handshake.
    static let handshakeSeconds = 2.0
    /// A client that proved its key pings when idle; one silent this long is dropped.
    static let silenceSeconds = 10.0
    /// How long a refused connection stays open for its refusal to leave.
    static let refusalSeconds = 0.5
    /// Spinning stops this long after the last traffic.
    static let spinNanoseconds: UInt64 = 20_000_000

    public let pool: Pool
    /// Where it listens, with the port the system chose for port 0.
    public private(set) var address: String
    let key: NodeKey
    let log: (String) -> Void
    let worker: UCXWorker
    let events = UCXEvents()
    private var listener: OpaquePointer?
    var connections: [OpaquePointer: NodeConnection] = [:]
    /// Writes whose bytes are still arriving into pool memory, by token.
    var arrivingWrites: [Int: ArrivingWrite] = [:]
    var nextToken = 0

    /// Listens on `address`.
    public init(pool: Pool, listeningOn address: NodeAddress, key: NodeKey,
                log: @escaping (String) -> Void) throws(NetError) {
        self.pool = pool
        self.address = address.text
        self.key = key
        self.log = log
        worker = try UCXWorker(serving: true)
        try worker.receiveMessages(into: events)
        let listener = try worker.listen(on: address, events: events)
        self.listener = listener
        var attributes = ucp_listener_attr_t()
        attributes.field_mask = UInt64(UCP_LISTENER_ATTR_FIELD_SOCKADDR.rawValue)
        if ucp_listener_query(listener, &attributes) == UCS_OK {
            self.address = SocketAddressText.of(&attributes.sockaddr) ?? address.text
        }
    }

    deinit {
        for endpoint in connections.keys { worker.close(endpoint) }
        if let listener { ucp_listener_destroy(listener) }
    }

    /// The transports and devices UCX may use, and the RDMA devices libibverbs sees.
    public var transports: [String] { worker.transports() }
    public var rdmaDevices: [String] { UCX.rdmaDevices() }

    /// Serves until `shouldStop` says so; it is asked at least every 100 ms.
    public func serve(shouldStop: () -> Bool) throws(NetError) {
        var sleeper = pollfd(fd: try worker.eventDescriptor(), events: Int16(POLLIN), revents: 0)
        var lastTraffic = Deadline.now()
        var quiet = true
        var rounds = 0
        while true {
            if worker.progress() { quiet = false }
            if !events.isEmpty {
                handleEvents()
                quiet = false
            }
            rounds &+= 1
            // The clock, the sweep and the stop are looked at every 1024
            // rounds, busy or not; sleep comes only after a quiet spell.
            guard rounds & 1023 == 0 else { continue }
            let now = Deadline.now()
            if !quiet { lastTraffic = now }
            quiet = true
            sweep(now: now)
            if shouldStop() { return }
            guard now - lastTraffic > Self.spinNanoseconds, worker.arm() else { continue }
            if poll(&sleeper, 1, 100) > 0 { lastTraffic = Deadline.now() }
        }
    }

    /// Answers what the worker's callbacks queued.
    private func handleEvents() {
        let requests = events.connectionRequests
        let failures = events.failures
        let inbox = events.inbox
        events.connectionRequests.removeAll(keepingCapacity: true)
        events.failures.removeAll(keepingCapacity: true)
        events.inbox.removeAll(keepingCapacity: true)
        for request in requests { accept(request) }
        for (endpoint, status) in failures where connections[endpoint] != nil {
            drop(endpoint, because: "connection lost (\(UCX.describe(status)))", quietly: !connections[endpoint]!.isReady)
        }
        for arrival in inbox {
            guard let endpoint = arrival.from, connections[endpoint] != nil else {
                worker.release(arrival.payload)
                continue
            }
            receive(arrival, on: endpoint)
        }
        let received = events.received
        events.received.removeAll(keepingCapacity: true)
        for (token, status) in received { finishWrite(token, status) }
        worker.reap()
    }

    /// Connections still in their handshake, at most: more are turned away
    /// until some finish, so strangers cannot use up the node.
    static let handshakesAtOnce = 64

    private func accept(_ request: OpaquePointer) {
        guard let listener else { return }
        guard connections.values.count(where: { !$0.isReady }) < Self.handshakesAtOnce else {
            worker.reject(request, listener: listener)
            log("turned a connection away: \(Self.handshakesAtOnce) handshakes under way")
            return
        }
        var attributes = ucp_conn_request_attr_t()
        attributes.field_mask = UInt64(UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR.rawValue)
        let peer = ucp_conn_request_query(request, &attributes) == UCS_OK
            ? SocketAddressText.of(&attributes.client_address) ?? "a client" : "a client"
        do {
            let endpoint = try worker.accept(request, events: events)
            connections[endpoint] = NodeConnection(peer: peer, deadline: Deadline.after(seconds: Self.handshakeSeconds))
        } catch {
            // UCX has let go of the request itself: rejecting it now
            // touched freed memory (a node crashed so when a client that
            // gave up during a SIGSTOP was accepted after SIGCONT).
            log("could not accept \(peer): \(error)")
        }
    }

    /// Closes connections whose handshake ran out of time, clients gone
    /// silent, and refused ones once their refusal had time to leave.
    private func sweep(now: UInt64) {
        for (endpoint, connection) in connections where connection.deadline.nanoseconds <= now {
            switch connection.state {
            case .refused: drop(endpoint, because: "closed", quietly: true)
            case .ready: drop(endpoint, because: "silent for \(Int(Self.silenceSeconds)) s", quietly: false)
            case .awaitingHello, .awaitingResponse:
                refuse(endpoint, "no complete handshake within \(Int(Self.handshakeSeconds)) s")
            }
        }
    }

    /// Sends `reason` as a refusal and logs it. The connection is closed a
    /// moment later, so that the refusal reaches the client first; what it
    /// sends meanwhile is ignored.
    func refuse(_ endpoint: OpaquePointer, _ reason: String) {
        guard var connection = connections[endpoint], !connection.isRefused else { return }
        _ = worker.post(NodeMessage.refusal(reason).encoded(), to: endpoint)
        log("client \(connection.peer): refused: \(reason)")
        connection.state = .refused
        connection.deadline = .after(seconds: Self.refusalSeconds)
        connections[endpoint] = connection
    }

    func drop(_ endpoint: OpaquePointer, because reason: String, quietly: Bool) {
        guard let connection = connections.removeValue(forKey: endpoint) else { return }
        if !quietly { log("client \(connection.peer): \(reason)") }
        worker.close(endpoint, waiting: false)
    }
}

/// A client's connection as the node follows it.
struct NodeConnection {
    enum State {
        case awaitingHello
        case awaitingResponse(clientNonce: [UInt8], nodeNonce: [UInt8])
        case ready
        case refused
    }

    let peer: String
    var state: State = .awaitingHello
    /// When the node gives up on it: the handshake's end, then its silence's.
    var deadline: Deadline

    init(peer: String, deadline: Deadline) {
        self.peer = peer
        self.deadline = deadline
    }

    var isReady: Bool { if case .ready = state { true } else { false } }
    var isRefused: Bool { if case .refused = state { true } else { false } }
}

/// "10.0.0.2:40112" for a socket address.
enum SocketAddressText {
    static func of(_ storage: UnsafeMutablePointer<sockaddr_storage>) -> String? {
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var service = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        let ok = storage.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
            getnameinfo(address, socklen_t(MemoryLayout<sockaddr_storage>.size), &host, socklen_t(host.count),
                        &service, socklen_t(service.count), NI_NUMERICHOST | NI_NUMERICSERV) == 0
        }
        guard ok else { return nil }
        let hostText = text(host), serviceText = text(service)
        return hostText.contains(":") ? "[\(hostText)]:\(serviceText)" : "\(hostText):\(serviceText)"
    }

    private static func text(_ characters: [CChar]) -> String {
        String(decoding: characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
