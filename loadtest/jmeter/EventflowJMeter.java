import com.thoughtworks.xstream.XStream;
import com.thoughtworks.xstream.security.AnyTypePermission;
import java.lang.reflect.Field;

/**
 * Starts Debian's JMeter 2.13 on Java 17 with Debian's XStream 1.4.2x, whose default allow-list (added in
 * 1.4.18, after JMeter 2.13 shipped) refuses JMeter's own plan classes ("ForbiddenClassException:
 * ScriptWrapper"). It opens the two XStream instances of SaveService to JMeter's classes, then runs JMeter.
 */
public final class EventflowJMeter {
    public static void main(String[] args) throws Exception {
        String home = System.getProperty("jmeter.home");
        org.apache.jmeter.util.JMeterUtils.setJMeterHome(home);
        org.apache.jmeter.util.JMeterUtils.loadJMeterProperties(home + "/bin/jmeter.properties");
        for (String arg : args) { // -Jk=v before SaveService reads its settings (JTL format) at class load
            int eq = arg.indexOf('=');
            if (arg.startsWith("-J") && eq > 2) {
                org.apache.jmeter.util.JMeterUtils.setProperty(arg.substring(2, eq), arg.substring(eq + 1));
            }
        }
        Class<?> saveService = Class.forName("org.apache.jmeter.save.SaveService");
        for (Field field : saveService.getDeclaredFields()) {
            if (XStream.class.isAssignableFrom(field.getType())) {
                field.setAccessible(true);
                ((XStream) field.get(null)).addPermission(AnyTypePermission.ANY);
            }
        }
        new org.apache.jmeter.JMeter().start(args);
    }
}
