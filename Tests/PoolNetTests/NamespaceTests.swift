import PoolCore
import Testing
import TestSupport
@testable import PoolNet
#if canImport(Glibc)
import Glibc
#endif

/// A node and clients on different network stacks, joined by veth pairs
/// as machines on a fabric would be (TCP here: this kernel has no RDMA).
@Suite(.serialized, .enabled(if: NetworkLab.available, "network namespaces cannot be made here (needs root and iproute2)"))
struct NamespaceTests {
    func client(_ lab: NetworkLab, _ served: ServedPool, _ index: Int, _ arguments: [String]) throws -> Child {
        try lab.spawn(in: lab.clients[index], builtExecutable("PoolTestHelper"),
                      [arguments[0], "\(lab.nodeAddress):\(served.port)", served.keyFile] + arguments.dropFirst(),
                      environment: ServedPool.environment)
    }

    /// Both count on one word by CAS and on the next by fetch-and-add.
    @Test func twoClientsAllocateWithoutOverlapAndCountWithoutLoss() throws {
        let lab = try NetworkLab(clients: 2)
        let served = try ServedPool(lab: lab)
        let local = try Pool.open(name: served.name, at: served.home)
        defer { local.close() }
        let counter = try local.createRegion(name: "counter", size: 16).address
        let used = local.usedPages
        let rounds = 300
        let storms = try (0..<2).map { try client(lab, served, $0, ["remote-storm", "\(counter)", "\(rounds)", "\($0)"]) }
        var runs: [GlobalAddress] = []
        for storm in storms {
            let lines = storm.waitFor("done")
            #expect(lines.last == "done", "\(lines.suffix(3))")
            runs += lines.filter { $0.hasPrefix("run ") }.compactMap { GlobalAddress(String($0.split(separator: " ")[1])) }
        }
        #expect(runs.count == 2 * rounds)
        #expect(Set(runs).count == runs.count, "two clients got the same page")
        #expect(try local.load(at: counter) == UInt64(2 * rounds), "CAS lost an update")
        #expect(try local.load(at: counter.advanced(by: 8)) == UInt64(2 * rounds), "fetch-and-add lost an update")
        #expect(local.usedPages == used + 2 * rounds)
        for run in runs { #expect(try local.load(at: run) == run.rawValue ^ 0x5a5a_5a5a_5a5a_5a5a) }
    }

    @Test func aCutLinkFailsCallsWithinTheDeadlineAndHealsWhenRestored() throws {
        let lab = try NetworkLab(clients: 1)
        let served = try ServedPool(lab: lab)
        let console = try client(lab, served, 0, ["remote-console", "-", "0"])
        #expect(console.ask("alloc").hasPrefix("run "))
        try lab.setLink(client: 0, up: false)
        let failed = console.ask("alloc")
        #expect(failed.hasPrefix("error: memory node"), "\(failed)")
        #expect(failed.contains("did not answer") || failed.contains("unreachable"), "\(failed)")
        try lab.setLink(client: 0, up: true)
        var healed = console.ask("alloc")
        // The first call after the link returns may still meet the old
        // connection's end; the one after connects afresh.
        if !healed.hasPrefix("run ") { healed = console.ask("alloc") }
        #expect(healed.hasPrefix("run "), "\(healed)")
        console.ask("quit")
    }

    /// README's example: a hash table in one region of the node's pool,
    /// filled by clients on two machines, each reading the other's keys.
    @Test func aSharedHashTableServesClientsInTwoNamespaces() throws {
        let lab = try NetworkLab(clients: 2)
        let served = try ServedPool(lab: lab)
        let slots = 1024
        let table: GlobalAddress = try {
            let local = try Pool.open(name: served.name, at: served.home)
            defer { local.close() }
            return try local.createRegion(name: "table", size: UInt64(slots * 16)).address
        }()
        let consoles = try (0..<2).map { try client(lab, served, $0, ["remote-console", "\(table)", "\(slots)"]) }
        for key in 1...200 { #expect(consoles[key % 2].ask("put \(key) \(key * 1000 + key % 2)") == "ok") }
        for key in 1...200 {
            #expect(consoles[(key + 1) % 2].ask("get \(key)") == "value \(key * 1000 + key % 2)")
        }
        #expect(consoles[0].ask("get 201") == "missing")
        for console in consoles { console.ask("quit") }
    }
}
