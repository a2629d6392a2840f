import ArgumentParser
import Foundation
import PoolCore
import PoolFS

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show a pool's capacity, use, shelves, regions and users.")

    @OptionGroup var pool: PoolLocation

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        try reportingErrors {
            // Read without joining, so that info writes nothing to the
            // pool; while others have it open, by joining it as they do.
            var info: PoolInfo
            do {
                info = try Pool.inspecting(name: pool.name, at: pool.path) { $0.info() }
            } catch PoolError.inUse {
                let opened = try Pool.open(name: pool.name, at: pool.path)
                info = opened.info()
                opened.close()
            }
            info.processes.removeAll { $0 == getpid() }
            if json {
                print(JSONText.encode(info))
            } else {
                print(info.report, terminator: "")
            }
        }
    }
}
