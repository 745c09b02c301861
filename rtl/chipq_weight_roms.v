// chipq RTL check: the weight memories of the conv core (SPEC.md section 7, "ROM images"), in one
// place for the per-layer engine (rtl/chipq_conv_engine.v) and the whole-network sequencer
// (rtl/chipq_network.v).
//
// Four ROMs filled from the `chipq export --format hex` images: alpha (8-bit words) and mask (45-bit
// words) addressed by stored kernel, bias (12-bit) by output channel, presence (1 bit) by kernel
// o*I + i of a pruned layer. Addresses are absolute: the engine's layer starts at word 0, the
// sequencer adds the layer table's base addresses. Reads are registered (one cycle, as the core
// expects); an address past a ROM reads word 0, whose value is then unused (a pruned lane's pointer
// past the last present kernel). `scan_bits` are SCAN_W presence bits from `s_addr` on, unregistered,
// zero past the ROM: the core's presence scan counts them.
`default_nettype none

module chipq_weight_roms #(
    parameter K_DEPTH      = 4096,  // alpha / mask words
    parameter B_DEPTH      = 512,   // bias words
    parameter P_DEPTH      = 1,     // presence bits
    parameter SCAN_W       = 32,    // presence bits the core's scan counts per cycle
    parameter ALPHA_HEX    = "",    // $readmemh images; empty: the ROM is not initialised here
    parameter MASK_HEX     = "",
    parameter BIAS_HEX     = "",
    parameter PRESENCE_HEX = ""
) (
    input  wire              clk,
    input  wire [31:0]       k_addr,
    input  wire [31:0]       b_addr,
    input  wire [31:0]       p_addr,
    input  wire [31:0]       s_addr,
    output reg  [7:0]        alpha_q,
    output reg  [44:0]       mask_q,
    output reg  [11:0]       bias_q,
    output reg               pres_q,
    output wire [SCAN_W-1:0] scan_bits
);
    reg [7:0]  alpha_rom [0:K_DEPTH-1];
    reg [44:0] mask_rom  [0:K_DEPTH-1];
    reg [11:0] bias_rom  [0:B_DEPTH-1];
    reg        pres_rom  [0:P_DEPTH-1];

    initial begin
        if (ALPHA_HEX != "")    $readmemh(ALPHA_HEX, alpha_rom);
        if (MASK_HEX != "")     $readmemh(MASK_HEX, mask_rom);
        if (BIAS_HEX != "")     $readmemh(BIAS_HEX, bias_rom);
        if (PRESENCE_HEX != "") $readmemh(PRESENCE_HEX, pres_rom);
    end

`ifndef SYNTHESIS
    // Simulation only (yosys defines SYNTHESIS): the images named at run time by plusargs
    // (+ALPHA_HEX=path +MASK_HEX= +BIAS_HEX= +PRESENCE_HEX=, the bank names of SPEC 7), so one build
    // of a given size runs any layer or network that fits it (images given as parameters would
    // mean one simulator build per layer).
    reg [8*1024-1:0] image_path;
    initial begin
        if ($value$plusargs("ALPHA_HEX=%s", image_path))    $readmemh(image_path, alpha_rom);
        if ($value$plusargs("MASK_HEX=%s", image_path))     $readmemh(image_path, mask_rom);
        if ($value$plusargs("BIAS_HEX=%s", image_path))     $readmemh(image_path, bias_rom);
        if ($value$plusargs("PRESENCE_HEX=%s", image_path)) $readmemh(image_path, pres_rom);
    end
`endif

    genvar w;
    generate
        for (w = 0; w < SCAN_W; w = w + 1) begin : scan
            assign scan_bits[w] = (s_addr + w < P_DEPTH) ? pres_rom[s_addr + w] : 1'b0;
        end
    endgenerate

    always @(posedge clk) begin
        alpha_q <= alpha_rom[k_addr < K_DEPTH ? k_addr : 32'd0];
        mask_q  <= mask_rom[k_addr < K_DEPTH ? k_addr : 32'd0];
        bias_q  <= bias_rom[b_addr < B_DEPTH ? b_addr : 32'd0];
        pres_q  <= pres_rom[p_addr < P_DEPTH ? p_addr : 32'd0];
    end
endmodule

`default_nettype wire
