// chipq RTL check: a small streaming engine for one conv3x3 + ReLU layer (SPEC.md 4.2), optionally
// with the 2x2 max-pool that follows it (SPEC.md 4.3) fused into its write-back.
//
// The core has no memory of its own: it reads the weight ROMs and the input SRAM and writes the output
// SRAM through ports, at addresses relative to the layer's banks, so that one core serves a one-layer
// check with its own memories (rtl/chipq_conv_engine.v) and a layer sequencer that adds its banks'
// base addresses and swaps its activation SRAMs (rtl/chipq_network.v). Every read is synchronous: the
// word of the address of cycle n is on the *_q / in_rdata port in cycle n+1 (the presence scan's
// SCAN_W bits are combinational and counted into a register).
//
// The ROMs hold the images `chipq export --format hex` writes (SPEC.md section 7): alpha and mask
// addressed by kernel o*I + i, bias by o. A pruned chip format v2 layer (cfg_pruned) also has a
// presence ROM (1 bit, address o*I + i), and its alpha and mask ROMs hold only the present kernels:
// address j = rank of (o, i) among them, o-major. Alpha words are cfg_alpha_bits-wide codes; the
// engine multiplies by code << (8 - cfg_alpha_bits). The input map is element (i, y, x) at address
// (i*H + y)*W + x (the C order of the test vectors), signed 9-bit (x0 = p - mean for conv1, 0..255 after).
//
// Schedule: LANES output channels at a time share one stream of input pixels.
//   for each group of LANES output channels:
//     pruned layer, LANES > 1: count the presence bits of the group's first LANES - 1 rows,
//       SCAN_W bits a cycle ((LANES-1)*ceil(I/SCAN_W) + 1 cycles), for each lane's first alpha/mask
//       address (lane 0 continues where the previous group's last lane ended). A row o is the
//       contiguous bits o*I .. o*I + I - 1 of the presence bank, so a chip reads it through a
//       SCAN_W-bit-wide port of the same bit stream (SPEC.md section 7).
//     for each input channel i:
//       load the group's LANES kernels (o, i) from the ROMs (LANES + 1 cycles); in a pruned layer
//       each lane reads its presence bit, its alpha/mask address advances only on a present kernel,
//       and an absent kernel loads alpha 0
//       if no lane has a present kernel (o, i), plane i is skipped (pruned layers; unless it is the
//       last plane and none has streamed yet: the accumulators still need their bias)
//       else stream plane i in raster order through two line buffers; every cycle one 3x3 window
//       reaches all lanes and each lane adds its 9 products to its accumulator of that pixel
//       ((H+1)*(W+1) positions: one extra row and column flush the last windows; 2 drain cycles)
//     requantise each lane's H*W accumulators into the output SRAM, element (o, y, x) at
//     address (o*H + y)*W + x, one a cycle; with cfg_pool, requantise the four accumulators of each
//     pooled pixel (y, x) in four cycles ((2y, 2x), (2y, 2x+1), (2y+1, 2x), (2y+1, 2x+1)) and write their
//     maximum at (o*H/2 + y)*W/2 + x (4*floor(H/2)*floor(W/2) cycles: an odd last row or column
//     is dropped, never read)
// Zero padding is applied by masking window taps whose row or column lies outside the map.
// Accumulators are signed 32-bit; the first streamed input channel starts from bias << bias_shift.
`default_nettype none

module chipq_conv_core #(
    parameter LANES  = 8,   // output channels computed in parallel
    parameter MAX_W  = 32,  // widest map (line buffer length is MAX_W + 1)
    parameter MAX_HW = 1024,// largest H*W (accumulator depth per lane)
    parameter SCAN_W = 32   // presence bits the scan counts per cycle
) (
    input  wire        clk,
    input  wire        rst,
    // layer registers (hold while busy)
    input  wire [12:0] cfg_in_ch,       // I, 1..4096
    input  wire [12:0] cfg_out_ch,      // O, 1..4096
    input  wire [7:0]  cfg_h,           // H, 1..255
    input  wire [7:0]  cfg_w,           // W, 1..MAX_W
    input  wire [2:0]  cfg_m,           // mask bits, 1..5
    input  wire [3:0]  cfg_alpha_bits,  // stored alpha code width, 1..8 (8 in v1)
    input  wire        cfg_pruned,      // the layer has a kernel presence bitmap (v2)
    input  wire [4:0]  cfg_bias_shift,
    input  wire [4:0]  cfg_out_shift,
    input  wire        cfg_pool,        // a 2x2 max-pool follows: fused into the write-back
    input  wire        start,
    output reg         busy,
    output reg         done,
    // weight ROMs, addresses relative to the layer's banks; each word is returned registered
    // (the word of the address of cycle n is on *_q in cycle n+1)
    output wire [23:0] rom_kaddr,       // alpha / mask address (o*I + i, or the present kernel's rank)
    output wire [12:0] rom_baddr,       // bias address o
    output wire [23:0] pres_addr,       // presence bit o*I + i of the kernel being loaded
    output wire [23:0] scan_addr_o,     // first of the SCAN_W presence bits of scan_bits
    input  wire [7:0]  alpha_q,
    input  wire [44:0] mask_q,
    input  wire [11:0] bias_q,
    input  wire        pres_q,
    input  wire [SCAN_W-1:0] scan_bits, // presence bits scan_addr_o .. + SCAN_W - 1 (combinational; 0 past the bank)
    // activation SRAMs: the input map is read (registered, like the ROMs), the output map written
    output wire [23:0] in_raddr,        // element (i, y, x) at (i*H + y)*W + x
    input  wire [8:0]  in_rdata,        // signed 9-bit: x0 = p - mean for conv1, 0..255 after
    output wire        out_we,
    output wire [23:0] out_waddr_o,     // element (o, y, x) at (o*H' + y)*W' + x (H', W' halved by cfg_pool)
    output wire [7:0]  out_wdata
);
    // ---------------------------------------------------------------- control
    localparam S_IDLE = 3'd0, S_LOAD = 3'd1, S_STREAM = 3'd2, S_DRAIN = 3'd3, S_REQ = 3'd4, S_SCAN = 3'd5;
    reg [2:0]  state;
    reg [12:0] group;          // first output channel of the group
    reg [12:0] chan;           // input channel i
    reg [23:0] group_k;        // group * I
    reg [23:0] kaddr;          // kernel address of the lane being loaded
    reg [12:0] load_count;     // 0..LANES
    reg [7:0]  sy, sx;         // stream position, 0..H, 0..W
    reg [23:0] plane_base;     // i * H * W
    reg [23:0] row_base;       // plane_base + sy * W
    reg [1:0]  drain;
    reg [12:0] req_lane;
    reg [15:0] req_pix;        // the pixel being requantised (no pool)
    reg [7:0]  req_py, req_px; // the pooled pixel being made (cfg_pool)
    reg [1:0]  req_q;          // which of its 2x2 inputs: {dy, dx}
    reg [7:0]  pool_a, pool_b, pool_c;  // its first three requantised inputs
    reg [23:0] out_waddr;
    // pruned layers: each lane's next alpha/mask address, and the presence scan
    reg [23:0] lane_ptr [0:LANES-1];
    reg        any_present;    // some live lane of this plane has a present kernel
    reg        streamed;       // a plane of this group has streamed (its accumulators hold the bias)
    reg        scan_issuing;
    reg [12:0] scan_lane, scan_i, sd_lane;
    reg [23:0] scan_addr, scan_count;
    reg        sd_valid, sd_last_in_row;

    wire [15:0] hw = cfg_h * cfg_w;
    wire [7:0]  pool_h = cfg_h >> 1, pool_w = cfg_w >> 1;  // an odd last row or column is dropped (SPEC 4.3)
    wire [15:0] out_hw = cfg_pool ? pool_h * pool_w : hw;   // output elements per channel
    // the accumulator requantised this cycle: pixel req_pix, or input {dy, dx} of pooled pixel (req_py, req_px)
    wire [15:0] req_addr = !cfg_pool ? req_pix :
                           ({req_py, 1'b0} + {8'd0, req_q[1]}) * cfg_w + {req_px, 1'b0} + {8'd0, req_q[0]};

    // ROM read port (synchronous: the word of the address of cycle n is there in cycle n+1),
    // shared by the lanes while loading; a lane past the last output channel reads address 0
    wire        load_lane_live = (load_count < LANES) && (group + load_count < cfg_out_ch);
    wire [23:0] load_ptr = lane_ptr[load_count < LANES ? load_count : 13'd0];
    // a pruned lane's alpha/mask address is its pointer; past the last present kernel it reads 0
    // (the kernel is then absent and the word unused)
    assign rom_kaddr = !load_lane_live ? 24'd0 : (!cfg_pruned ? kaddr : load_ptr);
    assign rom_baddr = load_lane_live ? group + load_count : 13'd0;
    // the presence ROM: the scan's address while scanning, else the kernel being loaded
    wire        scan_row_live = (group + scan_lane < cfg_out_ch);
    assign pres_addr = load_lane_live && cfg_pruned ? kaddr : 24'd0;
    assign scan_addr_o = scan_addr;
    reg         live_q;
    always @(posedge clk) live_q <= load_lane_live;
    wire        present_q = live_q && (!cfg_pruned || pres_q);  // the kernel captured this cycle
    // SCAN_W presence bits of row group + scan_lane from column scan_i, counted (bits past the row's
    // end are not part of it)
    reg  [7:0]  scan_chunk, scan_pop_q;
    integer w;
    always @(posedge clk) begin
        scan_chunk = 8'd0;
        for (w = 0; w < SCAN_W; w = w + 1)
            if (scan_i + w < cfg_in_ch)
                scan_chunk = scan_chunk + {7'd0, scan_bits[w]};
        scan_pop_q <= (state == S_SCAN && scan_issuing && scan_row_live) ? scan_chunk : 8'd0;
    end
    wire        scan_row_end = (scan_i + SCAN_W >= cfg_in_ch);
    wire [7:0]  alpha_value = alpha_q << (4'd8 - cfg_alpha_bits);  // code << (8 - a) (SPEC 3.4)

    // per-lane kernel registers
    reg [7:0]  lane_alpha [0:LANES-1];
    reg [44:0] lane_mask  [0:LANES-1];
    reg [11:0] lane_bias  [0:LANES-1];

    // ---------------------------------------------------------------- stream pipeline
    // stage A: position (sy, sx) -> SRAM read; stage B: line buffers; stage C: window -> MACs
    reg        a_valid;
    reg        a_inside;
    reg [23:0] a_addr;
    always @* begin
        a_valid  = (state == S_STREAM);
        a_inside = (sy < cfg_h) && (sx < cfg_w);
        a_addr   = row_base + sx;
    end

    assign in_raddr = a_inside ? a_addr : 24'd0;
    reg        b_valid, b_inside;
    reg [7:0]  b_sy, b_sx;
    wire [8:0] b_pix = in_rdata;  // the SRAM word of stage A's address
    always @(posedge clk) begin
        b_valid  <= a_valid;
        b_inside <= a_inside;
        b_sy     <= sy;
        b_sx     <= sx;
    end

    // the line buffer: one word per column, {row sy-2, row sy-1}; one read and one write port
    reg  [17:0] lines [0:MAX_W];
    wire [8:0]  p = b_inside ? b_pix[8:0] : 9'd0;
    wire [17:0] above = lines[b_sx];
    wire [8:0]  r1 = above[8:0];
    wire [8:0]  r2 = above[17:9];
    reg  [26:0] col0, col1, col2;  // {row sy, row sy-1, row sy-2} at columns sx, sx-1, sx-2
    reg         c_valid;
    reg  [7:0]  c_sy, c_sx;
    always @(posedge clk) begin
        if (b_valid) begin
            lines[b_sx] <= {r1, p};
            col2 <= col1;
            col1 <= col0;
            col0 <= {p, r1, r2};
        end
        c_valid <= b_valid;
        c_sy    <= b_sy;
        c_sx    <= b_sx;
    end

    // stage C: the window around centre (c_sy - 1, c_sx - 1); taps outside the map are zero
    wire        centre = c_valid && (c_sy != 8'd0) && (c_sx != 8'd0);
    wire [15:0] centre_addr = (c_sy - 8'd1) * cfg_w + (c_sx - 8'd1);
    reg  [9*9-1:0] window;
    integer ky, kx;
    reg  row_ok, col_ok;
    reg  [26:0] column;
    always @* begin
        for (ky = 0; ky < 3; ky = ky + 1) begin
            for (kx = 0; kx < 3; kx = kx + 1) begin
                // tap (ky, kx) reads row c_sy - 2 + ky, column c_sx - 2 + kx
                row_ok = (c_sy + ky >= 2) && (c_sy + ky - 2 < cfg_h);
                col_ok = (c_sx + kx >= 2) && (c_sx + kx - 2 < cfg_w);
                column = (kx == 0) ? col2 : ((kx == 1) ? col1 : col0);
                window[(ky*3 + kx)*9 +: 9] = (row_ok && col_ok) ? column[ky*9 +: 9] : 9'd0;
            end
        end
    end

    // ---------------------------------------------------------------- lanes
    wire [31:0] req_acc [0:LANES-1];
    genvar lane;
    generate
        for (lane = 0; lane < LANES; lane = lane + 1) begin : lanes
            reg signed [31:0] acc [0:MAX_HW-1];
            wire [9*14-1:0] weights;
            wire signed [31:0] acc_next;
            chipq_kernel_decode decode (
                .mask_word(lane_mask[lane]), .m(cfg_m), .alpha(lane_alpha[lane]), .weights(weights)
            );
            chipq_mac3x3 mac (
                .weights(weights), .x(window), .first(!streamed), .bias(lane_bias[lane]),
                .bias_shift(cfg_bias_shift), .acc_in(acc[centre_addr]), .acc_out(acc_next)
            );
            always @(posedge clk)
                if (centre && (group + lane < cfg_out_ch)) acc[centre_addr] <= acc_next;
            assign req_acc[lane] = acc[req_addr];
        end
    endgenerate

    wire [7:0] req_y, pool_y;
    chipq_requant requant (.acc(req_acc[req_lane]), .out_shift(cfg_out_shift), .y(req_y));
    // requantisation is monotone, so pooling its outputs (SPEC 4.3 on the conv's output) is exact
    chipq_maxpool2x2 pool (.a(pool_a), .b(pool_b), .c(pool_c), .d(req_y), .y(pool_y));
    wire req_writes = !cfg_pool || (req_q == 2'd3);  // a pooled pixel is written with its 4th input
    assign out_we      = (state == S_REQ) && req_writes;
    assign out_waddr_o = out_waddr;
    assign out_wdata   = cfg_pool ? pool_y : req_y;
    // the lane's last output element is written this cycle
    wire req_lane_end = cfg_pool ? (req_q == 2'd3 && req_px + 8'd1 == pool_w && req_py + 8'd1 == pool_h)
                                 : (req_pix + 16'd1 == hw);

    // ---------------------------------------------------------------- sequencer
    wire last_plane = (chan + 13'd1 >= cfg_in_ch);
    wire plane_has_work = any_present || present_q;  // at load_count == LANES: the last lane's bit is present_q
    wire needs_scan = cfg_pruned && (LANES > 1);
    integer n;

    // A new group of output channels starting at `first` (kernel address first * I): lane 0's
    // alpha/mask address continues from `rank`; the scan finds the other lanes' (pruned layers).
    task start_group(input [12:0] first, input [23:0] first_k, input [23:0] rank);
        begin
            group        <= first;
            group_k      <= first_k;
            kaddr        <= first_k;
            chan         <= 13'd0;
            plane_base   <= 24'd0;
            load_count   <= 13'd0;
            any_present  <= 1'b0;
            streamed     <= 1'b0;
            lane_ptr[0]  <= rank;
            scan_addr    <= first_k;
            scan_count   <= rank;
            scan_lane    <= 13'd0;
            scan_i       <= 13'd0;
            scan_issuing <= 1'b1;
            sd_valid     <= 1'b0;
            state        <= needs_scan ? S_SCAN : S_LOAD;
        end
    endtask

    // Plane `chan` is done (streamed or skipped): load the next one, or requantise the group.
    task next_plane;
        begin
            load_count  <= 13'd0;
            any_present <= 1'b0;
            if (!last_plane) begin
                chan       <= chan + 13'd1;
                plane_base <= plane_base + hw;
                kaddr      <= group_k + chan + 13'd1;
                state      <= S_LOAD;
            end else begin
                req_lane  <= 13'd0;
                req_pix   <= 16'd0;
                req_py    <= 8'd0;
                req_px    <= 8'd0;
                req_q     <= 2'd0;
                out_waddr <= group * out_hw;
                state     <= S_REQ;
            end
        end
    endtask

    always @(posedge clk) begin
        if (rst) begin
            state <= S_IDLE;
            busy  <= 1'b0;
            done  <= 1'b0;
        end else begin
            case (state)
                S_IDLE: if (start) begin
                    busy <= 1'b1;
                    done <= 1'b0;
                    start_group(13'd0, 24'd0, 24'd0);
                end
                S_SCAN: begin
                    // cycle n counts SCAN_W presence bits from scan_addr, cycle n+1 adds them; the end
                    // of row group + l gives lane l + 1 its first alpha/mask address
                    if (scan_issuing) begin
                        if (scan_row_end) begin
                            scan_addr <= scan_addr + (cfg_in_ch - scan_i);  // the next row's first bit
                            scan_i    <= 13'd0;
                            scan_lane <= scan_lane + 13'd1;
                            if (scan_lane + 13'd2 == LANES) scan_issuing <= 1'b0;
                        end else begin
                            scan_addr <= scan_addr + SCAN_W;
                            scan_i    <= scan_i + SCAN_W;
                        end
                    end
                    if (sd_valid) begin
                        scan_count <= scan_count + {16'd0, scan_pop_q};
                        if (sd_last_in_row) lane_ptr[sd_lane + 13'd1] <= scan_count + {16'd0, scan_pop_q};
                    end
                    sd_valid       <= scan_issuing;
                    sd_last_in_row <= scan_row_end;
                    sd_lane        <= scan_lane;
                    if (!scan_issuing) state <= S_LOAD;  // the last bit is counted this cycle
                end
                S_LOAD: begin
                    // cycle n issues lane n's read, cycle n+1 captures it
                    if (load_count < LANES) kaddr <= kaddr + cfg_in_ch;
                    if (load_count != 13'd0) begin
                        n = load_count - 1;
                        // an absent kernel weighs 0 (its ROM words belong to another kernel, or to none)
                        lane_alpha[n] <= present_q ? alpha_value : 8'd0;
                        lane_mask[n]  <= present_q ? mask_q : 45'd0;
                        lane_bias[n]  <= bias_q;
                        if (present_q) begin
                            any_present <= 1'b1;
                            if (cfg_pruned) lane_ptr[n] <= lane_ptr[n] + 24'd1;
                        end
                    end
                    load_count <= load_count + 13'd1;
                    if (load_count == LANES) begin
                        if (cfg_pruned && !plane_has_work && !(last_plane && !streamed)) begin
                            next_plane;  // every kernel (o, i) of the group is pruned: skip plane i
                        end else begin
                            sy <= 8'd0;
                            sx <= 8'd0;
                            row_base <= plane_base;
                            state <= S_STREAM;
                        end
                    end
                end
                S_STREAM: begin
                    if (sx == cfg_w) begin
                        sx <= 8'd0;
                        sy <= sy + 8'd1;
                        row_base <= row_base + cfg_w;
                        if (sy == cfg_h) begin
                            drain <= 2'd0;
                            state <= S_DRAIN;
                        end
                    end else begin
                        sx <= sx + 8'd1;
                    end
                end
                S_DRAIN: begin  // two cycles: the last positions pass stages B and C
                    drain <= drain + 2'd1;
                    if (drain == 2'd1) begin
                        streamed <= 1'b1;
                        next_plane;
                    end
                end
                S_REQ: begin
                    // one accumulator a cycle; a pooled pixel takes its four inputs in four cycles
                    if (req_writes) out_waddr <= out_waddr + 24'd1;
                    req_q <= req_q + 2'd1;
                    if (req_q == 2'd0) pool_a <= req_y;
                    if (req_q == 2'd1) pool_b <= req_y;
                    if (req_q == 2'd2) pool_c <= req_y;
                    if (req_q == 2'd3) begin
                        if (req_px + 8'd1 == pool_w) begin
                            req_px <= 8'd0;
                            req_py <= (req_py + 8'd1 == pool_h) ? 8'd0 : req_py + 8'd1;
                        end else begin
                            req_px <= req_px + 8'd1;
                        end
                    end
                    if (req_lane_end) begin
                        req_pix <= 16'd0;
                        if (req_lane + 13'd1 == LANES || group + req_lane + 13'd1 >= cfg_out_ch) begin
                            if (group + LANES >= cfg_out_ch) begin
                                busy  <= 1'b0;
                                done  <= 1'b1;
                                state <= S_IDLE;
                            end else begin
                                // the last lane's pointer ended at the next group's first kernel
                                start_group(group + LANES, group_k + LANES * cfg_in_ch, lane_ptr[LANES-1]);
                            end
                        end else begin
                            req_lane <= req_lane + 13'd1;
                        end
                    end else begin
                        req_pix <= req_pix + 16'd1;
                    end
                end
                default: state <= S_IDLE;
            endcase
        end
    end
endmodule

`default_nettype wire
