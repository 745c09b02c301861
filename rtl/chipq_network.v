// chipq RTL check: the whole network on chip from one start pulse — a layer sequencer around
// chipq_conv_core (rtl/chipq_conv_engine.v), with the weight ROMs of rtl/chipq_weight_roms.v.
//
//   layer table ROM --> sequencer --> layer registers + bank base addresses --> chipq_conv_core
//                                                                                |  ^
//   whole-network ROMs (alpha, mask, bias, presence) <-- base + relative address -+  |
//   activation SRAM A <--> (layer l reads one, writes the other; swap) <--> SRAM B --+
//
// The images are those `chipq export --format hex` writes (SPEC.md section 7, "Network images"):
// network.layers.hex (one 192-bit entry per stage), network.{alpha,mask,bias,presence}.hex (every
// conv's banks end to end; an entry holds its layer's base address in each). A stage is one conv
// layer; when the blob's next layer is a 2x2 max-pool, the stage's `pool` bit fuses it into the conv's
// write-back (chipq_conv_core requantises the four accumulators of a pooled pixel in four cycles and
// writes their maximum through chipq_maxpool2x2): the full-size conv map never reaches the SRAM, so
// a pool costs no SRAM pass and no SRAM space, and each SRAM only holds the largest map that is
// written. (A pool that does not follow a conv cannot be expressed; VGG has none and the exporter
// writes no network images for such a blob.)
//
// Entry fields (bit ranges of the 192-bit word; SPEC.md section 7):
//   [15:0] I   [31:16] O   [47:32] H   [63:48] W          (the conv's input map H x W)
//   [67:64] mask bits   [71:68] alpha bits   [79:72] bias shift   [87:80] out shift
//   [88] pruned   [89] pool   [90] last stage   [95:91] 0
//   [127:96] alpha/mask base   [159:128] bias base   [191:160] presence base
//
// Schedule per stage: 1 cycle reads the entry, 1 cycle starts the core (its `start` cycle), the
// core runs (tests/rtl/engine_cycles.py), and the cycle after its `done` ends the stage (or
// pauses, with `step`). One more cycle samples `start`. tests/rtl/network_cycles.py models it.
//
// Host side: the input map x0 = p - mean (signed 9-bit, element (c, y, x) at (c*H + y)*W + x) is
// written into SRAM A through the host port before `start`; after `done`, the host port reads the
// last stage's output (uint8, same layout) from the SRAM it was written to. With `step` set the
// sequencer stops after every stage (`layer_done` high, `stage` its index) until `resume`, and the
// host port reads that stage's output: a debug port for checking every layer. `cycles` counts
// the cycles from the edge that samples `start` to the one that raises `done`, pauses excluded.
`default_nettype none

module chipq_network #(
    parameter LANES      = 16,
    parameter MAX_W      = 32,      // widest conv map
    parameter MAX_HW     = 1024,    // largest conv map H*W
    parameter ACT_DEPTH  = 16384,   // words of each activation SRAM (>= every map written or read)
    parameter K_DEPTH    = 4096,    // alpha / mask ROM words (all layers)
    parameter B_DEPTH    = 512,     // bias ROM words (all layers)
    parameter P_DEPTH    = 1,       // presence ROM words (all pruned layers)
    parameter T_DEPTH    = 16,      // layer table entries
    parameter SCAN_W     = 32,
    parameter LAYERS_HEX   = "",    // $readmemh images; simulation may name them by plusargs instead
    parameter ALPHA_HEX    = "",
    parameter MASK_HEX     = "",
    parameter BIAS_HEX     = "",
    parameter PRESENCE_HEX = "",
    parameter IN_HEX       = ""     // optional initial input map in SRAM A
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        start,
    output reg         busy,
    output reg         done,
    // debug: stop after every stage
    input  wire        step,
    input  wire        resume,
    output reg         layer_done,
    output reg  [7:0]  stage,
    output reg  [31:0] cycles,
    // host port: write SRAM A (the input map), read the SRAM the last stage wrote
    input  wire        host_we,
    input  wire [23:0] host_waddr,
    input  wire [8:0]  host_wdata,
    input  wire [23:0] host_raddr,
    output wire [7:0]  host_rdata
);
    // ---------------------------------------------------------------- memories
    reg [191:0] layer_rom [0:T_DEPTH-1];
    reg [8:0]   act_a     [0:ACT_DEPTH-1];
    reg [8:0]   act_b     [0:ACT_DEPTH-1];

    initial begin
        if (LAYERS_HEX != "") $readmemh(LAYERS_HEX, layer_rom);
        if (IN_HEX != "")     $readmemh(IN_HEX, act_a);
    end

`ifndef SYNTHESIS
    // Simulation only: the layer table and the input map named at run time (+LAYERS_HEX=path,
    // +IN_HEX=path; the weight banks as chipq_weight_roms reads them), so one build of a given size
    // runs any network that fits it.
    reg [8*1024-1:0] image_path;
    initial begin
        if ($value$plusargs("LAYERS_HEX=%s", image_path)) $readmemh(image_path, layer_rom);
        if ($value$plusargs("IN_HEX=%s", image_path))     $readmemh(image_path, act_a);
    end
`endif

    // ---------------------------------------------------------------- the stage's entry
    reg  [191:0] entry;
    wire [12:0] e_in_ch      = entry[12:0];
    wire [12:0] e_out_ch     = entry[28:16];
    wire [7:0]  e_h          = entry[39:32];
    wire [7:0]  e_w          = entry[55:48];
    wire [2:0]  e_m          = entry[66:64];
    wire [3:0]  e_alpha_bits = entry[71:68];
    wire [4:0]  e_bias_shift = entry[76:72];
    wire [4:0]  e_out_shift  = entry[84:80];
    wire        e_pruned     = entry[88];
    wire        e_pool       = entry[89];
    wire        e_last       = entry[90];
    wire [31:0] e_k_base     = entry[127:96];
    wire [31:0] e_b_base     = entry[159:128];
    wire [31:0] e_p_base     = entry[191:160];

    // ---------------------------------------------------------------- sequencer
    localparam S_IDLE = 3'd0, S_FETCH = 3'd1, S_START = 3'd2, S_RUN = 3'd3, S_PAUSE = 3'd4;
    reg  [2:0] state;
    reg        src_b;     // the stage reads SRAM B (else A) and writes the other
    reg        result_b;  // the last stage's output is in SRAM B (else A)
    wire       core_done, core_busy;

    // The stage is over: the next one, or the end of the network.
    task next_stage;
        begin
            layer_done <= 1'b0;
            if (e_last) begin
                busy  <= 1'b0;
                done  <= 1'b1;
                state <= S_IDLE;
            end else begin
                stage <= stage + 8'd1;
                src_b <= !src_b;
                state <= S_FETCH;
            end
        end
    endtask

    always @(posedge clk) begin
        if (rst) begin
            state      <= S_IDLE;
            busy       <= 1'b0;
            done       <= 1'b0;
            layer_done <= 1'b0;
            result_b   <= 1'b0;
            stage      <= 8'd0;
            cycles     <= 32'd0;
        end else begin
            if (state != S_IDLE && state != S_PAUSE) cycles <= cycles + 32'd1;
            case (state)
                S_IDLE: if (start) begin
                    busy   <= 1'b1;
                    done   <= 1'b0;
                    stage  <= 8'd0;
                    src_b  <= 1'b0;
                    cycles <= 32'd1;
                    state  <= S_FETCH;
                end
                S_FETCH: begin
                    entry <= layer_rom[stage];
                    state <= S_START;
                end
                S_START: state <= S_RUN;  // the core samples its start this cycle
                S_RUN: if (core_done) begin
                    result_b <= !src_b;
                    if (step) begin
                        layer_done <= 1'b1;
                        state      <= S_PAUSE;
                    end else begin
                        next_stage;
                    end
                end
                S_PAUSE: if (resume) next_stage;
                default: state <= S_IDLE;
            endcase
        end
    end

    // ---------------------------------------------------------------- the core and its memories
    wire [23:0] rom_kaddr, pres_addr, scan_addr, in_raddr, out_waddr;
    wire [12:0] rom_baddr;
    wire        out_we;
    wire [7:0]  out_wdata;
    wire [7:0]  alpha_q;
    wire [44:0] mask_q;
    wire [11:0] bias_q;
    wire        pres_q;
    reg  [8:0]  in_q;
    wire [SCAN_W-1:0] scan_bits;
    // the stage's weights start at the layer table's base addresses
    chipq_weight_roms #(
        .K_DEPTH(K_DEPTH), .B_DEPTH(B_DEPTH), .P_DEPTH(P_DEPTH), .SCAN_W(SCAN_W),
        .ALPHA_HEX(ALPHA_HEX), .MASK_HEX(MASK_HEX), .BIAS_HEX(BIAS_HEX), .PRESENCE_HEX(PRESENCE_HEX)
    ) roms (
        .clk(clk), .k_addr(e_k_base + {8'd0, rom_kaddr}), .b_addr(e_b_base + {19'd0, rom_baddr}),
        .p_addr(e_p_base + {8'd0, pres_addr}), .s_addr(e_p_base + {8'd0, scan_addr}),
        .alpha_q(alpha_q), .mask_q(mask_q), .bias_q(bias_q), .pres_q(pres_q), .scan_bits(scan_bits)
    );
    always @(posedge clk) begin
        in_q    <= src_b ? act_b[in_raddr] : act_a[in_raddr];
        if (out_we && src_b) act_a[out_waddr] <= {1'b0, out_wdata};
        if (out_we && !src_b) act_b[out_waddr] <= {1'b0, out_wdata};
        if (host_we && !busy) act_a[host_waddr] <= host_wdata;
    end
    assign host_rdata = result_b ? act_b[host_raddr][7:0] : act_a[host_raddr][7:0];

    chipq_conv_core #(.LANES(LANES), .MAX_W(MAX_W), .MAX_HW(MAX_HW), .SCAN_W(SCAN_W)) core (
        .clk(clk), .rst(rst),
        .cfg_in_ch(e_in_ch), .cfg_out_ch(e_out_ch), .cfg_h(e_h), .cfg_w(e_w), .cfg_m(e_m),
        .cfg_alpha_bits(e_alpha_bits), .cfg_pruned(e_pruned), .cfg_bias_shift(e_bias_shift),
        .cfg_out_shift(e_out_shift), .cfg_pool(e_pool), .start(state == S_START), .busy(core_busy), .done(core_done),
        .rom_kaddr(rom_kaddr), .rom_baddr(rom_baddr), .pres_addr(pres_addr), .scan_addr_o(scan_addr),
        .alpha_q(alpha_q), .mask_q(mask_q), .bias_q(bias_q), .pres_q(pres_q), .scan_bits(scan_bits),
        .in_raddr(in_raddr), .in_rdata(in_q), .out_we(out_we), .out_waddr_o(out_waddr), .out_wdata(out_wdata)
    );
endmodule

`default_nettype wire
