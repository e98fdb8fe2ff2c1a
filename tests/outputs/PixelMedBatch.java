// Runs PixelMed's DicomSRValidator on several files in one JVM (its own main takes one),
// printing "=== <file>" before each report. Launched as a single-file source program.
import com.pixelmed.validate.DicomSRValidator;

public class PixelMedBatch {
    public static void main(String[] args) throws Exception {
        DicomSRValidator validator = new DicomSRValidator();
        for (String file : args) {
            System.out.println("=== " + file);
            System.out.println(validator.validate(file));
        }
    }
}
