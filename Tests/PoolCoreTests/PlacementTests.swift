import Testing
import TestSupport
@testable import PoolCore

@Suite struct PlacementParsingTests {
    @Test(arguments: ["local", "bind 0", "preferred 0", "preferred-many 0", "interleave 0", "weighted-interleave 0"])
    func roundTrips(_ text: String) throws {
        let placement = try Placement(parsing: text)
        #expect(placement.description == text)
        #expect(Placement(stored: text) == placement)
    }

    @Test func nodeListsAsNumactlWritesThem() throws {
        #expect(try NodeSet(parsing: "0-3,5").nodes == [0, 1, 2, 3, 5])
        #expect(NodeSet([5, 0, 1, 2, 3]).description == "0-3,5")
        #expect(try Placement(parsing: "bind=0").description == "bind 0")
    }

    @Test(arguments: ["bind", "bind ", "bind 0-", "bind a", "bind 3-1", "fly 0", "preferred 0,1", "local 0", "", "interleave 0,,1"])
    func refusesMalformed(_ text: String) {
        #expect(throws: PoolError.self) { try Placement(parsing: text) }
    }

    @Test func aMissingNodeIsNamedWithTheNodesThereAre() throws {
        let missing = (NodeSet.online.nodes.last ?? 0) + 1
        #expect {
            try Placement(parsing: "bind \(missing)")
        } throws: { error in
            "\(error)" == "invalid placement 'bind \(missing)': this machine has no node \(missing) (its nodes: \(NodeSet.online))"
        }
    }
}

@Suite struct PlacementTests {
    /// The kernel's mode numbers (numaif.h, plus 6 for weighted interleave).
    static let kernelModes = ["local": 4, "bind": 2, "preferred": 1, "preferred-many": 5, "interleave": 3,
                              "weighted-interleave": 6]

    /// Every mode this machine allows, on every node set worth trying here:
    /// node 0, and with several nodes, the last node and all of them.
    static var cases: [String] {
        let online = NodeSet.online
        var sets = ["0"]
        if online.nodes.count > 1 { sets += ["\(online.nodes.last!)", online.description] }
        var cases = ["local"]
        for nodes in sets {
            cases += ["bind \(nodes)", "preferred-many \(nodes)", "interleave \(nodes)"]
            if SystemCall.exists("/sys/kernel/mm/mempolicy/weighted_interleave") { cases.append("weighted-interleave \(nodes)") }
            if !nodes.contains(",") && !nodes.contains("-") { cases.append("preferred \(nodes)") }
        }
        return cases
    }

    func expectPlaced(_ pointer: UnsafeMutableRawPointer, _ placement: Placement, sourceLocation: SourceLocation = #_sourceLocation) {
        let policy = NodePlacement.policy(at: pointer)
        let mode = placement.description.split(separator: " ").first.map(String.init) ?? ""
        #expect(policy?.mode == Int32(PlacementTests.kernelModes[mode]!), "\(placement): \(String(describing: policy))", sourceLocation: sourceLocation)
        if placement != .local {
            #expect(policy?.nodes == placement.nodes, "\(placement): \(String(describing: policy))", sourceLocation: sourceLocation)
        }
        // Written pages sit on the asked nodes (the one node here, or the set).
        let node = NodePlacement.nodes(of: [pointer]).first ?? nil
        #expect(node != nil, sourceLocation: sourceLocation)
        if let node, placement != .local {
            #expect(placement.nodes.nodes.contains(node), "\(placement) put a page on node \(node)", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: PlacementTests.cases)
    func aHeapsNewPagesGetItsPlacement(_ text: String) throws {
        let placement = try Placement(parsing: text)
        let scratch = Scratch()
        let pool = try Pool.create(name: "numa", size: 32 << 20, pageSize: 64 << 10, at: scratch.path)
        let heap = try pool.createHeap(name: "placed")
        try heap.setPlacement(placement)
        #expect(heap.placement == placement)
        #expect(try pool.openHeap(name: "placed").stats().placement == text)
        for (size, bytes) in [(100, 100), (500_000, 500_000)] {
            let object = try heap.allocate(size: size)
            let pointer = try #require(pool.unsafePointer(to: object))
            pointer.initializeMemory(as: UInt8.self, repeating: 1, count: bytes)
            expectPlaced(pointer, placement)
        }
        let pages = try heap.allocatePages(count: 2)
        let pointer = try #require(pool.unsafePointer(to: pages))
        pointer.storeBytes(of: 1, as: UInt8.self)
        expectPlaced(pointer, placement)
        let perNode = heap.stats().pagesPerNode
        #expect(perNode.keys.allSatisfy { $0 == "untouched" || placement == .local || placement.nodes.nodes.contains(Int($0)!) }, "\(perNode)")
    }

    @Test func aPoolsDefaultReachesHeapsAndRegions() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "dflt", size: 32 << 20, pageSize: 64 << 10,
                                   placement: .interleave([0]), at: scratch.path)
        #expect(pool.defaultPlacement == .interleave([0]))
        let heap = try pool.createHeap(name: "h")
        #expect(heap.placement == .interleave([0]))
        let object = try heap.allocate(size: 64)
        expectPlaced(try #require(pool.unsafePointer(to: object)), .interleave([0]))
        let region = try pool.createRegion(name: "r", size: 1 << 20)
        expectPlaced(try #require(pool.unsafePointer(to: region.address)), .interleave([0]))
        let bound = try pool.createRegion(name: "b", size: 1 << 20, placement: .bind([0]))
        expectPlaced(try #require(pool.unsafePointer(to: bound.address)), .bind([0]))
        pool.close()
        let reopened = try Pool.open(name: "dflt", at: scratch.path)
        #expect(reopened.defaultPlacement == .interleave([0]))
    }

    @Test func migratingMovesPagesAlreadyThere() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "mig", size: 32 << 20, pageSize: 64 << 10, at: scratch.path)
        let heap = try pool.createHeap(name: "h")
        let object = try heap.allocate(size: 64)
        let pointer = try #require(pool.unsafePointer(to: object))
        pointer.storeBytes(of: 1, as: UInt8.self)
        let target = NodeSet.online.nodes.last!
        try heap.setPlacement(.bind([target]), migrate: true)
        expectPlaced(pointer, .bind([target]))
        try heap.setPlacement(nil)
        #expect(heap.placement == nil)
    }

    @Test func theLauncherPlacesAProgramsAllocations() throws {
        let scratch = Scratch()
        try Pool.create(name: "cexec", size: 64 << 20, pageSize: 64 << 10, at: scratch.path).close()
        let library = builtExecutable("libpoolcore.so")
        let directory = String(library[..<library.lastIndex(of: "/")!])
        let program = scratch.path + "/example"
        let compiled = try run("cc", ["-std=c11", "-I", repositoryRoot + "/include", repositoryRoot + "/Tests/CExample/example.c",
                                      "-L", directory, "-lpoolcore", "-Wl,-rpath," + directory, "-o", program])
        #expect(compiled.status == 0, "\(compiled.output)")
        let node = NodeSet.online.nodes.last!
        let result = try run(builtExecutable("poolfs"), ["exec", "--pool", "cexec", "--path", scratch.path,
                                                          "--heap", "launched", "--policy", "bind \(node)", "--", program])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.hasSuffix("ok"), "\(result.output)")
        let kept = try #require(result.output.split(separator: "\n").first { $0.hasPrefix("kept ") })
        let address = GlobalAddress(rawValue: try #require(UInt64(kept.dropFirst(5))))
        let pool = try Pool.open(name: "cexec", at: scratch.path)
        let heap = try pool.openHeap(name: "launched")
        // The placement was the program's alone: the heap keeps none...
        #expect(heap.placement == nil)
        // ...but the pages the program got were bound where it asked.
        expectPlaced(try #require(pool.unsafePointer(to: address)), .bind([node]))

        let bad = try run(builtExecutable("poolfs"), ["exec", "--pool", "cexec", "--path", scratch.path,
                                                       "--policy", "bind 999", "--", program])
        #expect(bad.status == 1)
        #expect(bad.output.hasPrefix("poolfs: invalid placement 'bind 999': this machine has no node 999"), "\(bad.output)")
    }
}
