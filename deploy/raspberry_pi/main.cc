// lce_classify: run a larq-dysign .tflite export on one image with Larq Compute Engine's
// runtime and print the top-5 classes.
//
//   lce_classify MODEL.tflite IMAGE [--labels FILE] [--threads N] [--runs R]
//                [--scale S] [--offset O]
//
// IMAGE is a binary PPM (P6, RGB) or PGM (P5, grey) with 8-bit samples, resized to the
// model's input (bilinear) and mapped to `pixel * S + O` (default 1/127.5 and -1: the
// [-1, 1] range the zoo's models are trained on); or a raw float32 file holding exactly the
// model's H*W*C input values (native byte order, HWC), used as is.
//
// The only LCE-specific line is `RegisterLCECustomOps`: without it TFLite stops with
// "Encountered unresolved custom op: LceQuantize". Build: see CMakeLists.txt and
// docs/raspberry-pi.md.

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "larq_compute_engine/tflite/kernels/lce_ops_register.h"
#include "tensorflow/lite/interpreter.h"
#include "tensorflow/lite/kernels/register.h"
#include "tensorflow/lite/model.h"

namespace {

struct Options {
  std::string model;
  std::string image;
  std::string labels;
  int threads = 1;
  int runs = 1;
  float scale = 1.0f / 127.5f;
  float offset = -1.0f;
};

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "lce_classify: error: %s\n", message.c_str());
  std::exit(1);
}

void Usage() {
  std::fprintf(stderr,
               "usage: lce_classify MODEL.tflite IMAGE [--labels FILE] [--threads N] "
               "[--runs R] [--scale S] [--offset O]\n"
               "  IMAGE: binary PPM (P6) / PGM (P5), or raw float32 HWC values\n");
  std::exit(2);
}

Options ParseArguments(int argc, char** argv) {
  Options options;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage();
      return argv[++i];
    };
    if (arg == "--labels") {
      options.labels = value();
    } else if (arg == "--threads") {
      options.threads = std::atoi(value().c_str());
    } else if (arg == "--runs") {
      options.runs = std::atoi(value().c_str());
    } else if (arg == "--scale") {
      options.scale = std::strtof(value().c_str(), nullptr);
    } else if (arg == "--offset") {
      options.offset = std::strtof(value().c_str(), nullptr);
    } else if (arg == "-h" || arg == "--help") {
      Usage();
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2 || options.threads < 1 || options.runs < 1) Usage();
  options.model = positional[0];
  options.image = positional[1];
  return options;
}

std::vector<unsigned char> ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) Fail("cannot open " + path);
  return std::vector<unsigned char>((std::istreambuf_iterator<char>(file)),
                                    std::istreambuf_iterator<char>());
}

// An 8-bit image, samples interleaved (HWC).
struct Image {
  int height = 0;
  int width = 0;
  int channels = 0;
  std::vector<unsigned char> pixels;
};

bool IsNetpbm(const std::vector<unsigned char>& data) {
  return data.size() > 2 && data[0] == 'P' && (data[1] == '5' || data[1] == '6');
}

// Binary PGM (P5) or PPM (P6) with maxval <= 255; '#' comments allowed in the header.
Image ReadNetpbm(const std::vector<unsigned char>& data, const std::string& path) {
  size_t pos = 2;
  auto next_int = [&]() {
    while (pos < data.size()) {
      if (data[pos] == '#') {
        while (pos < data.size() && data[pos] != '\n') ++pos;
      } else if (std::isspace(data[pos])) {
        ++pos;
      } else {
        break;
      }
    }
    long value = 0;
    bool digits = false;
    while (pos < data.size() && std::isdigit(data[pos])) {
      value = value * 10 + (data[pos++] - '0');
      digits = true;
      if (value > (1 << 24)) Fail(path + ": header value too large");
    }
    if (!digits) Fail(path + ": malformed PPM/PGM header");
    return static_cast<int>(value);
  };
  Image image;
  image.channels = data[1] == '6' ? 3 : 1;
  image.width = next_int();
  image.height = next_int();
  const int maxval = next_int();
  if (maxval < 1 || maxval > 255) Fail(path + ": only 8-bit PPM/PGM (maxval <= 255)");
  ++pos;  // the single whitespace after maxval
  const size_t size = static_cast<size_t>(image.width) * image.height * image.channels;
  if (image.width < 1 || image.height < 1 || data.size() < pos + size) {
    Fail(path + ": truncated image data");
  }
  image.pixels.assign(data.begin() + pos, data.begin() + pos + size);
  if (maxval != 255) {
    for (auto& p : image.pixels) p = static_cast<unsigned char>(p * 255 / maxval);
  }
  return image;
}

// Bilinear resize to height x width, channel conversion (grey <-> RGB), then
// `value * scale + offset`, into `input` (HWC floats).
void FillFromImage(const Image& image, int height, int width, int channels, float scale,
                   float offset, float* input) {
  for (int y = 0; y < height; ++y) {
    const float sy = std::max(0.0f, (y + 0.5f) * image.height / height - 0.5f);
    const int y0 = std::min(static_cast<int>(sy), image.height - 1);
    const int y1 = std::min(y0 + 1, image.height - 1);
    const float wy = sy - y0;
    for (int x = 0; x < width; ++x) {
      const float sx = std::max(0.0f, (x + 0.5f) * image.width / width - 0.5f);
      const int x0 = std::min(static_cast<int>(sx), image.width - 1);
      const int x1 = std::min(x0 + 1, image.width - 1);
      const float wx = sx - x0;
      float rgb[3];
      for (int c = 0; c < image.channels; ++c) {
        auto at = [&](int yy, int xx) {
          return static_cast<float>(
              image.pixels[(static_cast<size_t>(yy) * image.width + xx) * image.channels + c]);
        };
        const float top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx;
        const float bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx;
        rgb[c] = top * (1 - wy) + bottom * wy;
      }
      float* out = input + (static_cast<size_t>(y) * width + x) * channels;
      for (int c = 0; c < channels; ++c) {
        float v;
        if (channels == image.channels) {
          v = rgb[c];
        } else if (channels == 1) {  // RGB -> grey (ITU-R BT.601 luma)
          v = 0.299f * rgb[0] + 0.587f * rgb[1] + 0.114f * rgb[2];
        } else {  // grey -> RGB
          v = rgb[0];
        }
        out[c] = v * scale + offset;
      }
    }
  }
}

std::vector<std::string> ReadLabels(const std::string& path) {
  std::vector<std::string> labels;
  if (path.empty()) return labels;
  std::ifstream file(path);
  if (!file) Fail("cannot open labels file " + path);
  for (std::string line; std::getline(file, line);) labels.push_back(line);
  return labels;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = ParseArguments(argc, argv);

  std::unique_ptr<tflite::FlatBufferModel> model =
      tflite::FlatBufferModel::BuildFromFile(options.model.c_str());
  if (!model) Fail("cannot load " + options.model + " as a TFLite flatbuffer");

  tflite::ops::builtin::BuiltinOpResolver resolver;
  compute_engine::tflite::RegisterLCECustomOps(&resolver);  // LceQuantize, LceBconv2d, ...

  std::unique_ptr<tflite::Interpreter> interpreter;
  tflite::InterpreterBuilder builder(*model, resolver);
  builder.SetNumThreads(options.threads);
  if (builder(&interpreter) != kTfLiteOk || !interpreter) {
    Fail("cannot build the interpreter (see the TFLite message above)");
  }
  if (interpreter->AllocateTensors() != kTfLiteOk) Fail("cannot allocate tensors");

  TfLiteTensor* input = interpreter->input_tensor(0);
  if (input->type != kTfLiteFloat32 || input->dims->size != 4 || input->dims->data[0] != 1) {
    Fail("expected one float32 input of shape [1, H, W, C] (export with float32 input)");
  }
  const int height = input->dims->data[1];
  const int width = input->dims->data[2];
  const int channels = input->dims->data[3];
  float* input_data = interpreter->typed_input_tensor<float>(0);

  const std::vector<unsigned char> data = ReadFile(options.image);
  if (IsNetpbm(data)) {
    const Image image = ReadNetpbm(data, options.image);
    FillFromImage(image, height, width, channels, options.scale, options.offset, input_data);
  } else {
    const size_t expected = static_cast<size_t>(height) * width * channels * sizeof(float);
    if (data.size() != expected) {
      Fail(options.image + " is neither a PPM/PGM nor a raw float32 file of " +
           std::to_string(expected) + " bytes (" + std::to_string(height) + "x" +
           std::to_string(width) + "x" + std::to_string(channels) + " floats); it has " +
           std::to_string(data.size()));
    }
    std::memcpy(input_data, data.data(), expected);
  }

  std::vector<double> times_ms;
  for (int run = 0; run < options.runs; ++run) {
    const auto start = std::chrono::steady_clock::now();
    if (interpreter->Invoke() != kTfLiteOk) Fail("inference failed");
    const auto stop = std::chrono::steady_clock::now();
    times_ms.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
  }

  const TfLiteTensor* output = interpreter->output_tensor(0);
  if (output->type != kTfLiteFloat32) Fail("expected a float32 output");
  const int classes = output->dims->data[output->dims->size - 1];
  const float* scores = interpreter->typed_output_tensor<float>(0);
  std::vector<int> order(classes);
  std::iota(order.begin(), order.end(), 0);
  const int top = std::min(5, classes);
  std::partial_sort(order.begin(), order.begin() + top, order.end(),
                    [&](int a, int b) { return scores[a] > scores[b]; });

  const std::vector<std::string> labels = ReadLabels(options.labels);
  std::printf("%s on %s (%dx%dx%d input, %d threads)\n", options.model.c_str(),
              options.image.c_str(), height, width, channels, options.threads);
  for (int rank = 0; rank < top; ++rank) {
    const int c = order[rank];
    std::printf("%d. class %4d  score %.4f  %s\n", rank + 1, c, scores[c],
                c < static_cast<int>(labels.size()) ? labels[c].c_str() : "");
  }
  std::sort(times_ms.begin(), times_ms.end());
  std::printf("latency over %d run(s): min %.2f ms, median %.2f ms\n", options.runs,
              times_ms.front(), times_ms[times_ms.size() / 2]);
  return 0;
}
