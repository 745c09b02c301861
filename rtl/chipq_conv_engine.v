// chipq RTL check: a small streaming engine for one conv3x3 + ReLU layer (SPEC.md 4.2).
//
// Weights come from the ROM images `chipq export --format hex` writes (SPEC.md section 7): an alpha
// ROM and a mask ROM addressed by kernel o*I + i, a bias ROM addressed by o. The input map sits in
// an activation SRAM, element (i, y, x) at address (i*H + y)*W + x (the C order of the test vectors),
// 16-bit words of which the low 9 bits are used (signed: x0 = p - mean for conv1, 0..255 after).
//
// Schedule: LANES output channels at a time share one stream of input pixels.
//   for each group of LANES output channels:
//     for each input channel i:
//       load the group's LANES kernels (o, i) from the ROMs (LANES + 1 cycles)
//       stream plane i in raster order through two line buffers; every cycle one 3x3 window
//       reaches all lanes and each lane adds its 9 products to its accumulator of that pixel
//       ((H+1)*(W+1) positions: one extra row and column flush the last windows)
//     requantise each lane's H*W accumulators into the output SRAM, element (o, y, x) at
//     address (o*H + y)*W + x
// Zero padding is applied by masking window taps whose row or column lies outside the map.
// Accumulators are signed 32-bit; the first input channel starts from bias << bias_shift.
`default_nettype none

module chipq_conv_engine #(
    parameter LANES     = 8,      // output channels computed in parallel
    parameter MAX_W     = 32,     // widest map (line buffer length is MAX_W + 1)
    parameter MAX_HW    = 1024,   // largest H*W (accumulator depth per lane)
    parameter IN_DEPTH  = 4096,   // input SRAM words (>= I*H*W)
    parameter OUT_DEPTH = 8192,   // output SRAM words (>= O*H*W)
    parameter K_DEPTH   = 4096,   // alpha / mask ROM words (= O*I)
    parameter B_DEPTH   = 512,    // bias ROM words (= O)
    parameter ALPHA_HEX = "",     // $readmemh images; empty: the ROM is not initialised
    parameter BIAS_HEX  = "",
    parameter MASK_HEX  = "",
    parameter IN_HEX    = ""      // optional initial input map (else written through the host port)
) (
    input  wire        clk,
    input  wire        rst,
    // layer registers (hold while busy)
    input  wire [12:0] cfg_in_ch,       // I, 1..4096
    input  wire [12:0] cfg_out_ch,      // O, 1..4096
    input  wire [7:0]  cfg_h,           // H, 1..255
    input  wire [7:0]  cfg_w,           // W, 1..MAX_W
    input  wire [2:0]  cfg_m,           // mask bits, 1..5
    input  wire [4:0]  cfg_bias_shift,
    input  wire [4:0]  cfg_out_shift,
    input  wire        start,
    output reg         busy,
    output reg         done,
    // host port: write the input SRAM, read the output SRAM
    input  wire        in_we,
    input  wire [23:0] in_waddr,
    input  wire [15:0] in_wdata,
    input  wire [23:0] out_raddr,
    output wire [7:0]  out_rdata
);
    // ---------------------------------------------------------------- memories
    reg [7:0]  alpha_rom [0:K_DEPTH-1];
    reg [44:0] mask_rom  [0:K_DEPTH-1];
    reg [11:0] bias_rom  [0:B_DEPTH-1];
    reg [15:0] in_ram    [0:IN_DEPTH-1];
    reg [7:0]  out_ram   [0:OUT_DEPTH-1];

    initial begin
        if (ALPHA_HEX != "") $readmemh(ALPHA_HEX, alpha_rom);
        if (BIAS_HEX != "")  $readmemh(BIAS_HEX, bias_rom);
        if (MASK_HEX != "")  $readmemh(MASK_HEX, mask_rom);
        if (IN_HEX != "")    $readmemh(IN_HEX, in_ram);
    end

    assign out_rdata = out_ram[out_raddr];

    // ---------------------------------------------------------------- control
    localparam S_IDLE = 3'd0, S_LOAD = 3'd1, S_STREAM = 3'd2, S_DRAIN = 3'd3, S_REQ = 3'd4;
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
    reg [15:0] req_pix;
    reg [23:0] out_waddr;

    wire [15:0] hw = cfg_h * cfg_w;

    // ROM read port (synchronous: the word of the address of cycle n is there in cycle n+1),
    // shared by the lanes while loading; a lane past the last output channel reads address 0
    wire        load_lane_live = (group + load_count < cfg_out_ch);
    wire [23:0] rom_kaddr = load_lane_live ? kaddr : 24'd0;
    wire [12:0] rom_baddr = load_lane_live ? group + load_count : 13'd0;
    reg  [7:0]  alpha_q;
    reg  [44:0] mask_q;
    reg  [11:0] bias_q;
    always @(posedge clk) begin
        alpha_q <= alpha_rom[rom_kaddr];
        mask_q  <= mask_rom[rom_kaddr];
        bias_q  <= bias_rom[rom_baddr];
    end

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

    reg        b_valid, b_inside;
    reg [7:0]  b_sy, b_sx;
    reg [15:0] b_pix;
    always @(posedge clk) begin
        b_valid  <= a_valid;
        b_inside <= a_inside;
        b_sy     <= sy;
        b_sx     <= sx;
        b_pix    <= in_ram[a_inside ? a_addr : 24'd0];
        if (in_we) in_ram[in_waddr] <= in_wdata;
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
                .weights(weights), .x(window), .first(chan == 13'd0), .bias(lane_bias[lane]),
                .bias_shift(cfg_bias_shift), .acc_in(acc[centre_addr]), .acc_out(acc_next)
            );
            always @(posedge clk)
                if (centre && (group + lane < cfg_out_ch)) acc[centre_addr] <= acc_next;
            assign req_acc[lane] = acc[req_pix];
        end
    endgenerate

    wire [7:0] req_y;
    chipq_requant requant (.acc(req_acc[req_lane]), .out_shift(cfg_out_shift), .y(req_y));

    // ---------------------------------------------------------------- sequencer
    always @(posedge clk) begin
        if (rst) begin
            state <= S_IDLE;
            busy  <= 1'b0;
            done  <= 1'b0;
        end else begin
            case (state)
                S_IDLE: if (start) begin
                    busy    <= 1'b1;
                    done    <= 1'b0;
                    group   <= 13'd0;
                    group_k <= 24'd0;
                    chan    <= 13'd0;
                    plane_base <= 24'd0;
                    kaddr   <= 24'd0;
                    load_count <= 13'd0;
                    state   <= S_LOAD;
                end
                S_LOAD: begin
                    // cycle n issues lane n's read, cycle n+1 captures it
                    if (load_count < LANES) kaddr <= kaddr + cfg_in_ch;
                    if (load_count != 13'd0) begin
                        lane_alpha[load_count - 1] <= alpha_q;
                        lane_mask[load_count - 1]  <= mask_q;
                        lane_bias[load_count - 1]  <= bias_q;
                    end
                    if (load_count == LANES) begin
                        sy <= 8'd0;
                        sx <= 8'd0;
                        row_base <= plane_base;
                        state <= S_STREAM;
                    end
                    load_count <= load_count + 13'd1;
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
                        load_count <= 13'd0;
                        if (chan + 13'd1 < cfg_in_ch) begin
                            chan       <= chan + 13'd1;
                            plane_base <= plane_base + hw;
                            kaddr      <= group_k + chan + 13'd1;
                            state      <= S_LOAD;
                        end else begin
                            req_lane  <= 13'd0;
                            req_pix   <= 16'd0;
                            out_waddr <= group * hw;
                            state     <= S_REQ;
                        end
                    end
                end
                S_REQ: begin
                    out_ram[out_waddr] <= req_y;
                    out_waddr <= out_waddr + 24'd1;
                    if (req_pix + 16'd1 == hw) begin
                        req_pix <= 16'd0;
                        if (req_lane + 13'd1 == LANES || group + req_lane + 13'd1 >= cfg_out_ch) begin
                            if (group + LANES >= cfg_out_ch) begin
                                busy  <= 1'b0;
                                done  <= 1'b1;
                                state <= S_IDLE;
                            end else begin
                                group      <= group + LANES;
                                group_k    <= group_k + LANES * cfg_in_ch;
                                kaddr      <= group_k + LANES * cfg_in_ch;
                                chan       <= 13'd0;
                                plane_base <= 24'd0;
                                load_count <= 13'd0;
                                state      <= S_LOAD;
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
