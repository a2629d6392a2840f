import ArgumentParser
import PoolCore
import PoolFS

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a pool that no process has open; --repair fixes what it finds.",
        discussion: """
            Verifies the page tables, the free-page bitmaps, the region table and the
            process slots against each other, then replays the mounted file system's
            metadata log and checks that its files name exactly the pages it holds
            (a run that nothing names is a leak). A remote shelf's node is asked whether \
            the shelf's region is still reserved there (a node that does not answer is \
            reported, not counted as damage). Exits 0 when the pool is consistent,
            1 when it found damage or leaks (after --repair: when some remain).
            """)

    @OptionGroup var pool: PoolLocation

    @Flag(help: "Recover what dead processes left and reclaim leaked pages.")
    var repair = false

    func run() throws {
        try reportingErrors {
            let terminal = FileOutput.standardError.isTerminal
            // A check's file system is inspected under the pool's same hold;
            // a repair's is opened after it (the repair joins the pool).
            let (report, inspected) = try Pool.check(name: pool.name, at: pool.path, repair: repair, progress: { done, total in
                guard terminal, total > 1 << 20 else { return }
                FileOutput.standardError.write("\rchecking \(done * 100 / max(total, 1))% ")
                if done == total { FileOutput.standardError.write("\r") }
            }, then: { repair ? nil : FileSystem.check(pool: $0, repair: false) })
            for line in report.repaired { print("repaired: \(line)") }
            for line in report.problems { print("problem: \(line)") }
            for line in report.recoverable { print("left by a dead process: \(line)") }
            print("pool '\(pool.name)': \(report.pages) pages, \(report.allocatedPages) in \(report.allocatedRuns) "
                + "allocated runs, \(report.regionPages) in regions, \(report.heapPages) in heaps "
                + "(\(report.heapObjects) objects), \(report.leakedPages) leaked")
            let files = try checkFileSystem(inspected)
            guard try RemoteShelfCheck.run(pool: pool.name, at: pool.path) else { throw ExitCode(1) }
            if report.isClean && files {
                print("clean")
            } else if report.problems.isEmpty {
                print("consistent; the next open (or --repair) recovers what dead processes left")
            } else {
                throw ExitCode(1)
            }
        }
    }

    /// Whether the file system in the pool (if it was ever mounted) has
    /// nothing to repair. Only a repair joins the pool (which recovers what
    /// dead processes left): a check leaves it as it found it.
    private func checkFileSystem(_ inspected: FileSystemReport?) throws -> Bool {
        let found: FileSystemReport?
        if repair {
            let opened = try Pool.open(name: pool.name, at: pool.path)
            defer { opened.close() }
            found = FileSystem.check(pool: opened, repair: true)
        } else {
            found = inspected
        }
        guard let report = found else { return true }
        for line in report.repaired { print("repaired: \(line)") }
        for line in report.problems { print("problem: \(line)") }
        if !repair { for line in report.leftByCrash { print("left by a dead mount: \(line)") } }
        print("file system: \(report.files) files, \(report.directories) directories, \(report.filePages) pages in files, "
            + "\(report.logPages) in its log, \(report.unreferencedPages) unreferenced")
        guard report.problems.isEmpty else { throw ExitCode(1) }
        return report.leftByCrash.isEmpty || repair
    }
}
