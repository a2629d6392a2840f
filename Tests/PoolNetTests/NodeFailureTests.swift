import PoolCore
import Testing
import TestSupport
@testable import PoolNet
#if canImport(Glibc)
import Glibc
#endif

/// A node that stops, dies or comes back: calls fail within their deadline,
/// never hang, and the client reconnects by itself.
@Suite(.serialized) struct NodeFailureTests {
    /// Seconds `body` took.
    func timed(_ body: () -> Void) -> Double {
        let start = Deadline.now()
        body()
        return Double(Deadline.now() - start) / 1e9
    }

    @Test func aStoppedNodeFailsCallsWithinTheDeadlineThenServesAgain() throws {
        let served = try ServedPool()
        let remote = try connect(served, deadline: 1)
        defer { remote.close() }
        let run = try remote.allocatePages(count: 1)
        try remote.write(at: run, bytes: [1, 2, 3])
        kill(served.node!.pid, SIGSTOP)
        // The heartbeat finds it without any call.
        #expect(eventually(within: 10) { !remote.isConnected })
        var error: NetError?
        let took = timed { error = netError { _ = try remote.read(at: run, count: 3) } }
        guard case .timedOut = error else { Issue.record("\(String(describing: error))"); return }
        #expect(error!.description.contains("within 1 s"))
        #expect(took < 5, "a call took \(took) s against a deadline of 1 s")
        kill(served.node!.pid, SIGCONT)
        #expect(try remote.read(at: run, count: 3) == [1, 2, 3])
        #expect(remote.isConnected)
    }

    @Test func aKilledNodeFailsCallsThenItsRestartIsReconnected() throws {
        let served = try ServedPool()
        let remote = try connect(served, deadline: 1)
        defer { remote.close() }
        let run = try remote.allocatePages(count: 1)
        try remote.write(at: run, bytes: [4, 5, 6])
        served.node!.kill9()
        served.node!.wait()
        var error: NetError?
        let took = timed { error = netError { _ = try remote.read(at: run, count: 3) } }
        #expect(error != nil)
        #expect(took < 5, "a call took \(took) s against a deadline of 1 s")
        // Calls keep failing, each within its deadline, while it is down.
        #expect(netError { _ = try remote.allocatePages(count: 1) } != nil)
        try served.restart()
        #expect(try remote.read(at: run, count: 3) == [4, 5, 6])
    }

    /// A client writes page after page; the node is killed mid-storm and
    /// restarted: every write the client saw acknowledged is in the pool,
    /// and `poolfs check` finds the pool clean.
    @Test func aNodeKilledDuringAWriteStormKeepsWhatItAcknowledged() throws {
        let served = try ServedPool()
        let pages = 4096
        let region: GlobalAddress = try {
            let local = try Pool.open(name: served.name, at: served.home)
            defer { local.close() }
            return try local.createRegion(name: "storm", size: UInt64(pages * 4096)).address
        }()
        let writer = try Child(builtExecutable("PoolTestHelper"),
                               ["remote-writer", served.address, served.keyFile, "\(region)", "\(pages)"],
                               environment: ServedPool.environment)
        var acknowledged = -1
        while let line = writer.readLine(), line.hasPrefix("acked") {
            acknowledged = Int(line.split(separator: " ")[1])!
            if acknowledged == 300 { served.node!.kill9() }
        }
        writer.kill9()
        served.node!.wait()
        #expect(acknowledged >= 300 && acknowledged < pages - 1)

        let check = try run(builtExecutable("poolfs"), ["check", served.name, "--path", served.home])
        #expect(check.status == 0, "\(check.output)")
        let local = try Pool.open(name: served.name, at: served.home)
        defer { local.close() }
        for page in 0...acknowledged {
            let at = region.advanced(by: UInt64(page) * 4096)
            #expect(try local.load(at: at) == UInt64(page + 1))
            #expect(try local.load(at: at.advanced(by: 4088)) == UInt64(page + 1))
        }
        try served.restart()
        let remote = try connect(served)
        defer { remote.close() }
        #expect(try remote.fetchAndAdd(at: region.advanced(by: UInt64(acknowledged) * 4096), 0) == UInt64(acknowledged + 1))
    }
}
