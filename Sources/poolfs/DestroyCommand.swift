import ArgumentParser
import PoolCore

struct DestroyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "destroy",
        abstract: "Remove a pool and all its data; refused while a process has it open.")

    @OptionGroup var pool: PoolLocation

    func run() throws {
        try reportingErrors {
            try Pool.destroy(name: pool.name, at: pool.path)
            print("destroyed pool '\(pool.name)'")
        }
    }
}
