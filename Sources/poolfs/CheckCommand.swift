import ArgumentParser
import PoolCore

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a pool that no process has open; --repair fixes what it finds.",
        discussion: """
            Verifies the page tables, the free-page bitmaps, the region table and the
            process slots against each other. Exits 0 when the pool is consistent,
            1 when it found damage or leaks (after --repair: when some remain).
            """)

    @OptionGroup var pool: PoolLocation

    @Flag(help: "Recover what dead processes left and reclaim leaked pages.")
    var repair = false

    func run() throws {
        try reportingErrors {
            let terminal = FileOutput.standardError.isTerminal
            let report = try Pool.check(name: pool.name, at: pool.path, repair: repair) { done, total in
                guard terminal, total > 1 << 20 else { return }
                FileOutput.standardError.write("\rchecking \(done * 100 / max(total, 1))% ")
                if done == total { FileOutput.standardError.write("\r") }
            }
            for line in report.repaired { print("repaired: \(line)") }
            for line in report.problems { print("problem: \(line)") }
            for line in report.recoverable { print("left by a dead process: \(line)") }
            print("pool '\(pool.name)': \(report.pages) pages, \(report.allocatedPages) in \(report.allocatedRuns) "
                + "allocated runs, \(report.regionPages) in regions, \(report.heapPages) in heaps "
                + "(\(report.heapObjects) objects), \(report.leakedPages) leaked")
            if report.isClean {
                print("clean")
            } else if report.problems.isEmpty {
                print("consistent; the next open (or --repair) recovers what dead processes left")
            } else {
                throw ExitCode(1)
            }
        }
    }
}
