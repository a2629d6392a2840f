import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Rounds of storms killed with SIGKILL mid-storm: each round starts
/// `storms` children, waits until each is ready, then kills each at a random
/// later moment (0–3 more progress lines). Returns how many were killed.
@discardableResult
func killStormsMidway(rounds: Int, storms: Int, sourceLocation: SourceLocation = #_sourceLocation,
                      start: (_ round: Int, _ index: Int) throws -> Child) throws -> Int {
    var generator = SystemRandomNumberGenerator()
    var kills = 0
    for round in 0..<rounds {
        let children = try (0..<storms).map { try start(round, $0) }
        for child in children {
            let lines = child.waitFor("ready")
            #expect(lines.last == "ready", "\(lines.suffix(3))", sourceLocation: sourceLocation)
        }
        for child in children {
            for _ in 0..<Int.random(in: 0...3, using: &generator) { _ = child.readLine() }
            child.kill9()
            #expect(child.wait() == 128 + SIGKILL, sourceLocation: sourceLocation)
            kills += 1
        }
    }
    return kills
}
