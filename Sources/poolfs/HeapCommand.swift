import ArgumentParser
import Foundation
import PoolCore
import PoolFS

struct HeapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "heap",
        abstract: "Create, destroy, list and inspect heaps: allocators of small objects inside a pool.",
        subcommands: [Create.self, Destroy.self, List.self, Stats.self, Policy.self])

    struct Policy: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show or set where a heap's pages live.",
            discussion: """
                POLICY is local, bind NODES, preferred NODE, preferred-many NODES, interleave NODES
                or weighted-interleave NODES, with NODES as numactl writes them (0-3,5); quote it.
                Or remote (any remote shelf) or remote N (shelf N): pages on a memory node (poolfs
                grow --remote). New pages follow it; --migrate moves the pages the heap has (not
                to or from remote shelves). `default` goes back to the pool's default.
                """)
        @OptionGroup var pool: PoolLocation
        @Argument(help: "The heap's name.") var heap: String
        @Argument(help: "The new placement, e.g. 'interleave 0,1'.") var policy: String?
        @Flag(help: "Move the heap's existing pages too.") var migrate = false

        func run() throws {
            try pool.withPool { opened in
                let heap = try opened.openHeap(name: self.heap)
                if let policy {
                    try heap.setPlacement(policy == "default" ? nil : try Placement(parsing: policy), migrate: migrate)
                }
                print(heap.placement?.description ?? "default (first touch)")
            }
        }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an empty heap.")
        @OptionGroup var pool: PoolLocation
        @Argument(help: "The heap's name.") var heap: String

        func run() throws {
            try pool.withPool { opened in
                try opened.createHeap(name: heap)
                print("created heap '\(heap)'")
            }
        }
    }

    struct Destroy: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Destroy a heap; refused while it holds objects or a process allocates from it.")
        @OptionGroup var pool: PoolLocation
        @Argument(help: "The heap's name.") var heap: String

        func run() throws {
            try pool.withPool { opened in
                try opened.destroyHeap(name: heap)
                print("destroyed heap '\(heap)'")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a pool's heaps.")
        @OptionGroup var pool: PoolLocation

        func run() throws {
            try pool.withPool { opened in
                for heap in opened.heaps() { print(heap) }
            }
        }
    }

    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a heap's live counters.")
        @OptionGroup var pool: PoolLocation
        @Argument(help: "The heap's name.") var heap: String
        @Flag(help: "Print one JSON object.") var json = false

        func run() throws {
            try pool.withPool { opened in
                let stats = try opened.openHeap(name: heap).stats()
                if json {
                    print(JSONText.encode(stats))
                    return
                }
                print(stats.report, terminator: "")
            }
        }
    }
}
